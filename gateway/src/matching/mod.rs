//! Record linkage: whether two person records are one person, decided by the rules of
//! `mappings/matching.toml` (Fellegi–Sunter weights over field comparators, plus the hard rules
//! of the identifier systems declared in `mappings/patient.toml`). Pure functions: the blocking
//! query and the term frequencies come from `store::match_keys`, the rules from the mapping set.
//!
//! - [`Demographics`]: what matching reads of a person, normalised once.
//! - `compare`: the comparators (names token by token in any order, with Jaro–Winkler or
//!   Damerau–Levenshtein and a phonetic code; dates at the lower precision of the two).
//! - `score`: weights, hard rules, the score in 0..1, the grade and the explanation.
//! - `keys`: the blocking keys stored per person and looked up per query.

pub mod calibrate;
pub mod compare;
pub mod keys;
pub mod score;

use std::collections::BTreeMap;

use crate::mapping::PatientMapping;
use crate::tracker::search_form;

/// The fields matching compares, normalised: names in search form (lower case, accents
/// removed), the birth date as held (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`), phone digits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Demographics {
    /// Family name tokens, then given name tokens.
    pub name_tokens: Vec<String>,
    pub family: Option<String>,
    pub given: Option<String>,
    pub birth_date: Option<String>,
    /// The option code (`FEMALE`), with "unknown" left out.
    pub gender: Option<String>,
    /// The last nine digits: the subscriber number without country or trunk prefix.
    pub phone: Option<String>,
    pub village: Option<String>,
    /// The first address line, in search form.
    pub address: Option<String>,
    pub postal_code: Option<String>,
    /// `(system, value)` of every declared identifier the person holds.
    pub identifiers: Vec<(String, String)>,
}

/// Digits that identify a phone line whatever prefix it was written with.
pub fn phone_digits(raw: &str) -> Option<String> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 6 {
        return None;
    }
    Some(digits[digits.len().saturating_sub(9)..].to_owned())
}

fn tokens(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

impl Demographics {
    /// From a person's attribute values (attribute id → value), as the Patient mapping places them.
    pub fn from_values(values: &BTreeMap<i64, String>, map: &PatientMapping) -> Demographics {
        let get = |a: Option<i64>| {
            a.and_then(|a| values.get(&a))
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let family = get(map.family).map(search_form);
        let given = get(map.given).map(search_form);
        let mut name_tokens: Vec<String> = Vec::new();
        for part in [&family, &given].into_iter().flatten() {
            name_tokens.extend(tokens(part));
        }
        let gender = get(map.gender.as_ref().map(|g| g.attribute_id))
            .filter(|g| !g.eq_ignore_ascii_case("unknown"))
            .map(str::to_owned);
        let phone = map
            .telecom
            .iter()
            .filter(|t| t.system == "phone")
            .find_map(|t| get(Some(t.attribute_id)).and_then(phone_digits));
        let address_part = |json: &str| {
            map.address
                .iter()
                .find(|f| f.json == json)
                .and_then(|f| get(Some(f.attribute_id)))
                .map(search_form)
        };
        let village = address_part("city");
        let address = address_part("line");
        // Postal codes are compared without their spaces (`SW1A 1AA`, `sw1a1aa`).
        let postal_code = address_part("postalCode")
            .map(|p| p.chars().filter(|c| !c.is_whitespace()).collect::<String>())
            .filter(|p| !p.is_empty());
        let identifiers = map
            .identifiers
            .iter()
            .filter_map(|i| Some((i.system.clone(), get(Some(i.attribute_id))?.to_owned())))
            .collect();
        Demographics {
            name_tokens,
            family,
            given,
            birth_date: get(map.birth_date).map(str::to_owned),
            gender,
            phone,
            village,
            address,
            postal_code,
            identifiers,
        }
    }

    /// The birth year, when the birth date has one.
    pub fn birth_year(&self) -> Option<i32> {
        self.birth_date.as_deref()?.get(..4)?.parse().ok()
    }

    /// The values held in single-valued systems, as `system|value`: two people differing in one
    /// of them are certainly two people (stored with the blocking keys to drop such candidates
    /// early).
    /// Whether the person holds a value of the primary single-valued system
    /// (`PatientMapping::primary`): then nobody holding another value there can be them.
    pub fn holds_primary(&self, map: &PatientMapping) -> bool {
        map.primary()
            .is_some_and(|p| self.identifier(&p.system).is_some())
    }

    pub fn single_valued(&self, map: &PatientMapping) -> Vec<String> {
        let mut out: Vec<String> = map
            .identifiers
            .iter()
            .filter(|i| i.single_valued)
            .filter_map(|i| {
                Some(format!(
                    "{}|{}",
                    i.system,
                    self.identifier(&i.system)?.trim()
                ))
            })
            .collect();
        out.sort();
        out
    }

    pub fn identifier(&self, system: &str) -> Option<&str> {
        self.identifiers
            .iter()
            .find(|(s, _)| s == system)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_digits_drop_prefixes() {
        assert_eq!(
            phone_digits("+254 700 123456").as_deref(),
            Some("700123456")
        );
        assert_eq!(phone_digits("0700-123-456").as_deref(), Some("700123456"));
        assert_eq!(phone_digits("12 34"), None);
    }
}
