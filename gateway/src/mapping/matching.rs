//! `matching.toml`: the rules by which `Patient/$match` decides whether two records are one
//! person. Fellegi–Sunter: each compared field adds log2(m/u) when it agrees and
//! log2((1−m)/(1−u)) when it disagrees; the sum plus the prior odds becomes a score in 0..1, and
//! the thresholds turn the score into a grade. See docs/identity.md for the whole method.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::{Problem, Source};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: Spanned<String>,
    prior_log2_odds: Spanned<f64>,
    thresholds: RawThresholds,
    blocking: RawBlocking,
    fields: RawFields,
    linking: Option<RawLinking>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLinking {
    on_write: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThresholds {
    certain: Spanned<f64>,
    probable: Option<Spanned<f64>>,
    possible: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlocking {
    birth_year_window: Spanned<i64>,
    max_candidates: Spanned<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFields {
    name: Option<RawField>,
    birth_date: Option<RawField>,
    gender: Option<RawField>,
    phone: Option<RawField>,
    village: Option<RawField>,
    address: Option<RawField>,
    postal_code: Option<RawField>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    m: Spanned<f64>,
    u: Spanned<f64>,
    comparator: Option<Spanned<String>>,
    phonetic: Option<Spanned<String>>,
    agree: Option<Spanned<f64>>,
    partial: Option<Spanned<f64>>,
    term_frequency: Option<bool>,
    year_tolerance: Option<Spanned<i64>>,
}

/// How two strings are compared (names token by token, in any order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    JaroWinkler,
    DamerauLevenshtein,
    Exact,
}

/// A phonetic code under which two spellings of one name count as near-agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phonetic {
    DoubleMetaphone,
    Soundex,
    None,
}

#[derive(Debug, Clone)]
pub struct FieldRule {
    /// P(the field agrees | same person).
    pub m: f64,
    /// P(the field agrees | different people).
    pub u: f64,
    pub comparator: Comparator,
    pub phonetic: Phonetic,
    /// Similarity from which the field agrees in full.
    pub agree: f64,
    /// Similarity below which it disagrees; in between, the weight is interpolated.
    pub partial: f64,
    /// Agreement on a common value counts for less (u becomes the value's frequency).
    pub term_frequency: bool,
    /// Birth dates: years this far apart still agree in part (estimated ages).
    pub year_tolerance: i32,
}

impl FieldRule {
    pub fn agree_weight(&self) -> f64 {
        (self.m / self.u).log2()
    }

    pub fn disagree_weight(&self) -> f64 {
        ((1.0 - self.m) / (1.0 - self.u)).log2()
    }
}

#[derive(Debug, Clone)]
pub struct MatchingRules {
    /// The declared version and a hash of the file: recorded with every decision.
    pub version: String,
    pub prior_log2_odds: f64,
    pub certain: f64,
    pub probable: f64,
    pub possible: f64,
    pub birth_year_window: i32,
    pub max_candidates: i64,
    /// Whether every Patient create and update is matched against the registry (links and
    /// potential duplicates, `tracker::identity`).
    pub link_on_write: bool,
    pub name: Option<FieldRule>,
    pub birth_date: Option<FieldRule>,
    pub gender: Option<FieldRule>,
    pub phone: Option<FieldRule>,
    pub village: Option<FieldRule>,
    /// The first address line (street and house number).
    pub address: Option<FieldRule>,
    pub postal_code: Option<FieldRule>,
}

struct Checker<'a> {
    src: &'a Source,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn fail(&mut self, span: std::ops::Range<usize>, message: String) {
        self.problems.push(self.src.problem(span, message));
    }

    fn probability(&mut self, v: &Spanned<f64>, what: &str) -> f64 {
        let x = *v.get_ref();
        if !(x > 0.0 && x < 1.0) {
            self.fail(
                v.span(),
                format!("{what} = {x}: must be a probability strictly between 0 and 1"),
            );
        }
        x
    }

    fn field(&mut self, name: &str, raw: &RawField, strings: bool) -> FieldRule {
        let m = self.probability(&raw.m, &format!("fields.{name}.m"));
        let u = self.probability(&raw.u, &format!("fields.{name}.u"));
        if m <= u {
            self.fail(raw.m.span(), format!("fields.{name}: m = {m} is not above u = {u}; agreement on this field would count against a match"));
        }
        let comparator = match raw.comparator.as_ref().map(|c| (c, c.get_ref().as_str())) {
            None => Comparator::JaroWinkler,
            Some((_, "jaro_winkler")) => Comparator::JaroWinkler,
            Some((_, "damerau_levenshtein")) => Comparator::DamerauLevenshtein,
            Some((_, "exact")) => Comparator::Exact,
            Some((c, other)) => {
                self.fail(c.span(), format!("fields.{name}.comparator: unknown comparator `{other}` (known: jaro_winkler, damerau_levenshtein, exact)"));
                Comparator::JaroWinkler
            }
        };
        if !strings {
            if let Some(c) = &raw.comparator {
                self.fail(c.span(), format!("fields.{name}: the comparator is fixed for this field (see docs/identity.md); remove `comparator`"));
            }
        }
        let phonetic = match raw.phonetic.as_ref().map(|p| (p, p.get_ref().as_str())) {
            None => Phonetic::None,
            Some((p, _)) if name != "name" => {
                self.fail(
                    p.span(),
                    format!("fields.{name}.phonetic: only the name has a phonetic code"),
                );
                Phonetic::None
            }
            Some((_, "double_metaphone")) => Phonetic::DoubleMetaphone,
            Some((_, "soundex")) => Phonetic::Soundex,
            Some((_, "none")) => Phonetic::None,
            Some((p, other)) => {
                self.fail(p.span(), format!("fields.{name}.phonetic: unknown phonetic code `{other}` (known: double_metaphone, soundex, none)"));
                Phonetic::None
            }
        };
        let agree = raw
            .agree
            .as_ref()
            .map(|a| self.probability(a, &format!("fields.{name}.agree")))
            .unwrap_or(0.92);
        let partial = raw
            .partial
            .as_ref()
            .map(|p| self.probability(p, &format!("fields.{name}.partial")))
            .unwrap_or(0.8);
        if partial >= agree {
            let span = raw
                .partial
                .as_ref()
                .map(Spanned::span)
                .unwrap_or(raw.m.span());
            self.fail(span, format!("fields.{name}: partial = {partial} must be below agree = {agree} (from partial up to agree the weight rises from disagreement to agreement)"));
        }
        let year_tolerance = match &raw.year_tolerance {
            None => 0,
            Some(y) if name != "birth_date" => {
                self.fail(
                    y.span(),
                    format!("fields.{name}.year_tolerance: only birth_date has one"),
                );
                0
            }
            Some(y) if !(0..=5).contains(y.get_ref()) => {
                self.fail(
                    y.span(),
                    format!(
                        "fields.birth_date.year_tolerance = {}: use 0 to 5 years",
                        y.get_ref()
                    ),
                );
                0
            }
            Some(y) => *y.get_ref() as i32,
        };
        FieldRule {
            m,
            u,
            comparator,
            phonetic,
            agree,
            partial,
            term_frequency: raw.term_frequency.unwrap_or(false),
            year_tolerance,
        }
    }
}

pub fn load(src: &Source) -> Result<MatchingRules, Vec<Problem>> {
    let raw: Raw = src.parse().map_err(|p| vec![p])?;
    let mut c = Checker {
        src,
        problems: Vec::new(),
    };
    let t = &raw.thresholds;
    let certain = c.probability(&t.certain, "thresholds.certain");
    let possible = c.probability(&t.possible, "thresholds.possible");
    let probable = match &t.probable {
        Some(p) => c.probability(p, "thresholds.probable"),
        None => (certain + possible) / 2.0,
    };
    if !(possible < probable && probable < certain) {
        c.fail(
            t.certain.span(),
            format!("thresholds: need possible < probable < certain, found {possible}, {probable}, {certain}"),
        );
    }
    let window = *raw.blocking.birth_year_window.get_ref();
    if !(0..=10).contains(&window) {
        c.fail(
            raw.blocking.birth_year_window.span(),
            format!("blocking.birth_year_window = {window}: use 0 to 10 years"),
        );
    }
    let max = *raw.blocking.max_candidates.get_ref();
    if !(1..=10_000).contains(&max) {
        c.fail(
            raw.blocking.max_candidates.span(),
            format!("blocking.max_candidates = {max}: use 1 to 10000 (every candidate is compared field by field)"),
        );
    }
    let f = &raw.fields;
    let name = f.name.as_ref().map(|r| c.field("name", r, true));
    let birth_date = f
        .birth_date
        .as_ref()
        .map(|r| c.field("birth_date", r, false));
    let gender = f.gender.as_ref().map(|r| c.field("gender", r, false));
    let phone = f.phone.as_ref().map(|r| c.field("phone", r, false));
    let village = f.village.as_ref().map(|r| c.field("village", r, true));
    let address = f.address.as_ref().map(|r| c.field("address", r, true));
    let postal_code = f
        .postal_code
        .as_ref()
        .map(|r| c.field("postal_code", r, true));
    if name.is_none() && birth_date.is_none() {
        c.fail(
            raw.version.span(),
            "fields: compare at least the name or the birth date; without them nothing can be told apart".into(),
        );
    }
    let prior = *raw.prior_log2_odds.get_ref();
    if !(-40.0..=0.0).contains(&prior) {
        c.fail(raw.prior_log2_odds.span(), format!("prior_log2_odds = {prior}: the prior odds of a match are below even (use -40 to 0; e.g. -8 for 1 in 256)"));
    }
    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    let hash = hex::encode(&Sha256::digest(src.text.as_bytes())[..4]);
    Ok(MatchingRules {
        version: format!("{}+{hash}", raw.version.get_ref()),
        prior_log2_odds: prior,
        certain,
        probable,
        possible,
        birth_year_window: window as i32,
        max_candidates: max,
        link_on_write: raw.linking.as_ref().is_none_or(|l| l.on_write),
        name,
        birth_date,
        gender,
        phone,
        village,
        address,
        postal_code,
    })
}

/// `matching.toml`'s text with the estimate's prior, m and u in place of the old values, and
/// `version` as its version; comments and everything else stay as written (`kiunga calibrate
/// --write`).
pub fn with_estimate(
    text: &str,
    estimate: &crate::matching::calibrate::Estimate,
    version: &str,
) -> Result<String, toml_edit::TomlError> {
    let mut doc: toml_edit::DocumentMut = text.parse()?;
    // Four significant digits: enough for a weight, and readable.
    let round = |x: f64| {
        let digits = 3 - x.abs().log10().floor() as i32;
        let scale = 10f64.powi(digits.clamp(0, 12));
        (x * scale).round() / scale
    };
    // A new value keeps the old one's surroundings (an end-of-line comment).
    fn set(item: &mut toml_edit::Item, new: toml_edit::Value) {
        let mut new = new;
        if let Some(old) = item.as_value() {
            *new.decor_mut() = old.decor().clone();
        }
        *item = toml_edit::Item::Value(new);
    }
    set(&mut doc["version"], version.into());
    set(
        &mut doc["prior_log2_odds"],
        ((estimate.prior_log2_odds * 100.0).round() / 100.0).into(),
    );
    for f in &estimate.fields {
        let field = &mut doc["fields"][f.field];
        set(&mut field["m"], round(f.m).into());
        set(&mut field["u"], round(f.u).into());
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use crate::matching::calibrate::{Estimate, FieldEstimate};

    #[test]
    fn an_estimate_is_written_into_the_file_keeping_its_comments() {
        let text = "# the rules\nversion = \"demo\"\n# before comparing\nprior_log2_odds = -10.0\n\n[fields.name]\nm = 0.97 # agreement\nu = 0.001\ncomparator = \"jaro_winkler\"\n";
        let e = Estimate {
            prior_log2_odds: -1.4567,
            prior_was: -10.0,
            fields: vec![FieldEstimate {
                field: "name",
                m: 0.735512,
                u: 0.000062048,
                u_random: 0.001,
                m_was: 0.97,
                u_was: 0.001,
                compared: 10,
                random_compared: 10,
            }],
            pairs: 10,
            random_pairs: 10,
            iterations: 3,
            expected_matches: 2.0,
        };
        let out = super::with_estimate(text, &e, "demo-calibrated").expect("the text is TOML");
        assert!(
            out.contains("# the rules\nversion = \"demo-calibrated\""),
            "{out}"
        );
        assert!(
            out.contains("# before comparing\nprior_log2_odds = -1.46"),
            "{out}"
        );
        assert!(out.contains("m = 0.7355 # agreement"), "{out}");
        assert!(out.contains("u = 0.00006205"), "{out}");
        assert!(out.contains("comparator = \"jaro_winkler\""), "{out}");
    }
}
