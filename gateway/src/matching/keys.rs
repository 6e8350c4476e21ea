//! Blocking keys: the few indexed values under which a person's possible duplicates are looked
//! for, so that a query compares tens of candidates instead of the whole registry.
//!
//! - `n`: the Double Metaphone code of every name token (family and given alike, so swapped
//!   names meet), with the birth year; a query looks its codes up within the rules' birth-year
//!   window, and people with no birth year under any year.
//! - `t`: the phone number's last nine digits.
//! - `p`: the family and given name codes as one pair, in sorted order and without the year: a
//!   duplicate whose birth year was mistyped (1915 for 1951) still meets its original.
//! - `d`: the full birth date with the village: a duplicate whose names are both misspelt beyond
//!   their phonetic codes (`micthell boxwbr` for `mitchell boxer`) still meets its original when
//!   it was born the same day in the same place.
//! - `a`: the house number with the code of the street's first word (`75|ARNR` for
//!   `75 woronora street`): a duplicate whose names and birth date all went wrong still meets the
//!   people registered at its address.
//!
//! Identifier values need no key: the attribute values' own index finds them.

use super::compare::phonetic_codes;
use super::Demographics;
use crate::mapping::matching::Phonetic;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub kind: &'static str,
    pub code: String,
    pub year: Option<i32>,
}

/// The name codes of a person, whatever phonetic code the rules compare with: blocking must
/// not depend on a setting that can change under stored keys.
pub fn name_codes(d: &Demographics) -> Vec<String> {
    let mut codes: Vec<String> = d
        .name_tokens
        .iter()
        .flat_map(|t| phonetic_codes(Phonetic::DoubleMetaphone, t))
        .collect();
    codes.sort();
    codes.dedup();
    codes
}

/// The codes of the family name paired with those of the given name, each pair sorted so that
/// swapped names give the same pairs.
pub fn pair_codes(d: &Demographics) -> Vec<String> {
    let codes = |s: &Option<String>| -> Vec<String> {
        s.as_deref()
            .map(|n| {
                n.split(|c: char| !c.is_alphanumeric())
                    .filter(|t| !t.is_empty())
                    .take(1)
                    .flat_map(|t| phonetic_codes(Phonetic::DoubleMetaphone, t))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (family, given) = (codes(&d.family), codes(&d.given));
    let mut out: Vec<String> = family
        .iter()
        .flat_map(|f| {
            given.iter().map(move |g| {
                if f <= g {
                    format!("{f}|{g}")
                } else {
                    format!("{g}|{f}")
                }
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

pub fn keys(d: &Demographics) -> Vec<Key> {
    let year = d.birth_year();
    let mut out: Vec<Key> = name_codes(d)
        .into_iter()
        .map(|code| Key {
            kind: "n",
            code,
            year,
        })
        .collect();
    out.extend(pair_codes(d).into_iter().map(|code| Key {
        kind: "p",
        code,
        year: None,
    }));
    if let Some(p) = &d.phone {
        out.push(Key {
            kind: "t",
            code: p.clone(),
            year: None,
        });
    }
    if let (Some(date), Some(village)) = (d.birth_date.as_deref(), d.village.as_deref()) {
        // A full date only: a year shared with a village is no block at all.
        if date.len() == 10 && !village.is_empty() {
            out.push(Key {
                kind: "d",
                code: format!("{date}|{village}"),
                year: None,
            });
        }
    }
    out.extend(address_codes(d).into_iter().map(|code| Key {
        kind: "a",
        code,
        year: None,
    }));
    out
}

/// The house number (the first word with a digit) with each phonetic code of the street's
/// first word of letters after it; nothing when the line lacks either.
pub fn address_codes(d: &Demographics) -> Vec<String> {
    let Some(line) = d.address.as_deref() else {
        return Vec::new();
    };
    let words: Vec<&str> = line
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .collect();
    let Some(at) = words
        .iter()
        .position(|w| w.chars().any(|c| c.is_ascii_digit()))
    else {
        return Vec::new();
    };
    let Some(street) = words[at + 1..]
        .iter()
        .find(|w| w.chars().count() >= 3 && w.chars().all(char::is_alphabetic))
    else {
        return Vec::new();
    };
    let mut codes: Vec<String> = phonetic_codes(Phonetic::DoubleMetaphone, street)
        .into_iter()
        .map(|c| format!("{}|{c}", words[at]))
        .collect();
    codes.sort();
    codes.dedup();
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swapped_names_share_their_keys() {
        let a = Demographics {
            name_tokens: vec!["mwangi".into(), "amina".into()],
            birth_date: Some("1990-04-12".into()),
            phone: Some("700123456".into()),
            ..Default::default()
        };
        let b = Demographics {
            name_tokens: vec!["amina".into(), "mwangi".into()],
            birth_date: Some("1990".into()),
            ..Default::default()
        };
        let (ka, kb) = (keys(&a), keys(&b));
        assert_eq!(name_codes(&a), name_codes(&b));
        let (pa, pb) = (
            Demographics {
                family: Some("mwangi".into()),
                given: Some("amina".into()),
                ..Default::default()
            },
            Demographics {
                family: Some("amina".into()),
                given: Some("mwangi".into()),
                ..Default::default()
            },
        );
        assert!(!pair_codes(&pa).is_empty());
        assert_eq!(pair_codes(&pa), pair_codes(&pb));
        assert!(ka.iter().any(|k| k.kind == "t"));
        // Born the same day in the same place, whatever the names.
        let place = |name: &str, born: &str| Demographics {
            name_tokens: vec![name.into()],
            birth_date: Some(born.into()),
            village: Some("kilima".into()),
            ..Default::default()
        };
        let day = |d: &Demographics| {
            keys(d)
                .into_iter()
                .filter(|k| k.kind == "d")
                .collect::<Vec<_>>()
        };
        assert_eq!(
            day(&place("micthell", "1973-02-18")),
            day(&place("mitchell", "1973-02-18"))
        );
        assert_eq!(day(&place("micthell", "1973-02-18")).len(), 1);
        assert!(day(&place("amina", "1973")).is_empty());
        assert!(kb
            .iter()
            .filter(|k| k.kind == "n")
            .all(|k| k.year == Some(1990)));
    }

    #[test]
    fn an_address_is_a_house_number_and_a_street_code() {
        let at = |line: &str| Demographics {
            address: Some(line.into()),
            ..Default::default()
        };
        assert_eq!(
            address_codes(&at("75 woronora street")),
            address_codes(&at("75 woronorra st"))
        );
        let codes = address_codes(&at("75 woronora street"));
        assert!(
            !codes.is_empty() && codes.iter().all(|c| c.starts_with("75|")),
            "{codes:?}"
        );
        assert_ne!(
            address_codes(&at("75 woronora street")),
            address_codes(&at("57 woronora street"))
        );
        assert!(address_codes(&at("woronora street")).is_empty());
        assert!(address_codes(&at("plot 75")).is_empty());
        assert!(keys(&at("75 woronora street"))
            .iter()
            .any(|k| k.kind == "a"));
    }
}
