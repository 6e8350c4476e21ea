//! Field comparators: each returns a similarity in 0..1 that `score` turns into a weight.

use rphonetic::{DoubleMetaphone, Encoder, Soundex};

use crate::mapping::matching::{Comparator, FieldRule, Phonetic};

/// Similarity of two strings under the rule's comparator.
pub fn strings(rule: &FieldRule, a: &str, b: &str) -> f64 {
    match rule.comparator {
        Comparator::JaroWinkler => strsim::jaro_winkler(a, b),
        Comparator::DamerauLevenshtein => strsim::normalized_damerau_levenshtein(a, b),
        Comparator::Exact => f64::from(u8::from(a == b)),
    }
}

/// The phonetic codes of a token (Double Metaphone has a primary and an alternate).
pub fn phonetic_codes(p: Phonetic, token: &str) -> Vec<String> {
    match p {
        Phonetic::DoubleMetaphone => {
            let r = DoubleMetaphone::default().double_metaphone(token);
            let (primary, alternate) = (r.primary(), r.alternate());
            let mut codes = vec![primary.clone()];
            if alternate != primary && !alternate.is_empty() {
                codes.push(alternate);
            }
            codes.retain(|c| !c.is_empty());
            codes
        }
        Phonetic::Soundex => {
            let code = Soundex::default().encode(token);
            if code.is_empty() {
                Vec::new()
            } else {
                vec![code]
            }
        }
        Phonetic::None => Vec::new(),
    }
}

fn token(rule: &FieldRule, a: &str, b: &str) -> f64 {
    let s = strings(rule, a, b);
    if s >= rule.agree || rule.phonetic == Phonetic::None {
        return s;
    }
    // Two spellings of one name (Mohamed / Muhammad, Wanjiku / Wanjikũ) sound alike: count them
    // as agreeing, which Jaro–Winkler alone does not always do for short African and Asian names.
    let (ca, cb) = (
        phonetic_codes(rule.phonetic, a),
        phonetic_codes(rule.phonetic, b),
    );
    if ca.iter().any(|c| cb.contains(c)) {
        rule.agree
    } else {
        s
    }
}

/// Names compared token by token in any order (family and given names swapped, a middle name
/// missing): each token of the shorter name is paired with its best match in the other, and the
/// weakest pair is the similarity. (A mean would let twins, one family name and two given
/// names, agree half-way.)
pub fn names(rule: &FieldRule, a: &[String], b: &[String]) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    Some(
        short
            .iter()
            .map(|t| long.iter().map(|u| token(rule, t, u)).fold(0.0, f64::max))
            .fold(1.0, f64::min),
    )
}

/// An address line compared word by word like a name (`names`): `12 main street` and
/// `14 main street` differ in the house number, which a whole-string similarity would hide.
pub fn words(rule: &FieldRule, a: &str, b: &str) -> f64 {
    let split = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    };
    names(rule, &split(a), &split(b)).unwrap_or(0.0)
}

/// How precisely a (partial) date is known: 1 year, 2 month, 3 day.
pub fn precision(d: &str) -> usize {
    match d.len() {
        4 => 1,
        7 => 2,
        _ => 3,
    }
}

fn cut(d: &str, precision: usize) -> &str {
    let len = match precision {
        1 => 4,
        2 => 7,
        _ => 10,
    };
    d.get(..len).unwrap_or(d)
}

/// Birth dates compared at the lower precision of the two: `1990` agrees with `1990-04-12`.
/// Returns the similarity and the precision it was judged at. Near misses get part of the
/// credit: day and month swapped, one digit wrong, or years within the estimated-age tolerance.
pub fn dates(rule: &FieldRule, a: &str, b: &str) -> (f64, usize) {
    let p = precision(a).min(precision(b));
    let (ca, cb) = (cut(a, p), cut(b, p));
    if ca == cb {
        return (1.0, p);
    }
    let near = rule.partial + (rule.agree - rule.partial) / 2.0;
    let year = |d: &str| d.get(..4).and_then(|y| y.parse::<i32>().ok());
    if p == 3 && ca.get(..4) == cb.get(..4) {
        let (ma, da) = (ca.get(5..7), ca.get(8..10));
        let (mb, db) = (cb.get(5..7), cb.get(8..10));
        if ma == db && da == mb {
            return (near, p);
        }
    }
    if strsim::damerau_levenshtein(ca, cb) == 1 {
        return (near, p);
    }
    match (year(a), year(b)) {
        (Some(ya), Some(yb)) if (ya - yb).abs() <= rule.year_tolerance => (near, 1),
        _ => (0.0, p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(comparator: Comparator, phonetic: Phonetic) -> FieldRule {
        FieldRule {
            m: 0.95,
            u: 0.01,
            comparator,
            phonetic,
            agree: 0.92,
            partial: 0.8,
            term_frequency: false,
            year_tolerance: 1,
        }
    }

    fn toks(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn names_in_any_order_and_by_sound() {
        let r = rule(Comparator::JaroWinkler, Phonetic::DoubleMetaphone);
        let same = names(&r, &toks("mwangi amina"), &toks("amina mwangi")).unwrap();
        assert!((same - 1.0).abs() < 1e-9, "{same}");
        let typo = names(&r, &toks("mwangi amina"), &toks("mwangi aminah")).unwrap();
        assert!(typo > 0.92, "{typo}");
        let sounds = names(&r, &toks("mohamed"), &toks("muhammad")).unwrap();
        assert!(sounds >= 0.92, "{sounds}");
        let other = names(&r, &toks("mwangi amina"), &toks("mwangi akinyi")).unwrap();
        assert!(other < 0.92, "{other}");
        assert_eq!(names(&r, &[], &toks("x")), None);
        let dl = rule(Comparator::DamerauLevenshtein, Phonetic::Soundex);
        assert!(names(&dl, &toks("otieno"), &toks("oiteno")).unwrap() >= 0.8);
    }

    #[test]
    fn dates_at_the_lower_precision() {
        let r = rule(Comparator::Exact, Phonetic::None);
        assert_eq!(dates(&r, "1990", "1990-04-12"), (1.0, 1));
        assert_eq!(dates(&r, "1990-04", "1990-04-12"), (1.0, 2));
        assert_eq!(dates(&r, "1990-04-12", "1990-04-12"), (1.0, 3));
        let (swapped, _) = dates(&r, "1990-04-12", "1990-12-04");
        assert!(swapped > 0.8 && swapped < 0.92, "{swapped}");
        let (typo, _) = dates(&r, "1990-04-12", "1990-04-13");
        assert!(typo > 0.8, "{typo}");
        assert_eq!(dates(&r, "1990", "1991").1, 1);
        assert!(
            dates(&r, "1990", "1991").0 > 0.8,
            "estimated ages one year apart"
        );
        assert_eq!(dates(&r, "1990-04-12", "1975-09-30").0, 0.0);
    }
}
