//! One decision: hard rules of the identifier systems first, then Fellegi–Sunter weights per
//! field, the score and the grade, with every field's contribution kept for the explanation.

use super::{compare, Demographics};
use crate::mapping::matching::{FieldRule, MatchingRules};
use crate::mapping::patient::IdentifierMap;

/// FHIR's match-grade codes (http://terminology.hl7.org/CodeSystem/match-grade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grade {
    CertainlyNot,
    /// Below the possible-match threshold: not a candidate.
    None,
    Possible,
    Probable,
    Certain,
}

impl Grade {
    pub fn code(self) -> &'static str {
        match self {
            Grade::Certain => "certain",
            Grade::Probable => "probable",
            Grade::Possible => "possible",
            Grade::CertainlyNot | Grade::None => "certainly-not",
        }
    }
}

/// What one field added to the weight, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    pub field: &'static str,
    /// log2 weight; 0 when a side has no value.
    pub weight: f64,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// 0..1: the probability of one person under the rules' prior and weights (1 or 0 when a
    /// hard rule decided).
    pub score: f64,
    pub grade: Grade,
    /// The prior plus every field's weight.
    pub weight: f64,
    pub contributions: Vec<Contribution>,
    /// The hard rule that decided, if one did.
    pub rule: Option<String>,
    /// The rule-set version (`matching.toml`'s version and hash).
    pub version: String,
}

/// How common a name is: the share of the registry's people with that family name and with
/// that given name (`None` when unknown).
pub trait Frequencies {
    fn family(&self, name: &str) -> Option<f64>;
    fn given(&self, name: &str) -> Option<f64>;
}

/// The weight of a similarity: agreement from `agree` up, disagreement below `partial`, and in
/// between a straight line from one to the other.
fn weight(rule: &FieldRule, similarity: f64, agree_weight: f64) -> f64 {
    let disagree = rule.disagree_weight();
    if similarity >= rule.agree {
        agree_weight
    } else if similarity < rule.partial {
        disagree
    } else {
        let t = (similarity - rule.partial) / (rule.agree - rule.partial);
        disagree + t * (agree_weight - disagree)
    }
}

fn absent(field: &'static str) -> Contribution {
    Contribution {
        field,
        weight: 0.0,
        detail: "missing on one side: no evidence either way".into(),
    }
}

/// Compares `query` with `candidate` (a registered person).
/// The single-valued system in which the two hold different values, if any: then they are two
/// people, whatever else agrees.
pub fn two_people<'s>(
    systems: &'s [IdentifierMap],
    a: &Demographics,
    b: &Demographics,
) -> Option<&'s IdentifierMap> {
    systems.iter().filter(|s| s.single_valued).find(|s| {
        matches!((a.identifier(&s.system), b.identifier(&s.system)), (Some(x), Some(y)) if x.trim() != y.trim())
    })
}

/// One field of a pair compared: its similarity in 0..1 (None when a side has no value) and,
/// for birth dates, the precision it was compared at (1 year, 2 month, 3 day).
pub struct Similarity<'r> {
    pub field: &'static str,
    pub rule: &'r FieldRule,
    pub similarity: Option<f64>,
    pub precision: usize,
}

/// Every field the rules compare, in the rules' order. Scoring ([`decide`]) and calibration
/// (`calibrate`) read the same comparisons.
pub fn similarities<'r>(
    rules: &'r MatchingRules,
    a: &Demographics,
    b: &Demographics,
) -> Vec<Similarity<'r>> {
    let mut out = Vec::new();
    let mut push = |field: &'static str, rule: &'r Option<FieldRule>, s: Option<(f64, usize)>| {
        if let Some(rule) = rule {
            out.push(Similarity {
                field,
                rule,
                similarity: s.map(|s| s.0),
                precision: s.map_or(3, |s| s.1),
            });
        }
    };
    fn both<'s>(x: Option<&'s str>, y: Option<&'s str>) -> Option<(&'s str, &'s str)> {
        x.zip(y)
    }
    let exact = |x: &Option<String>, y: &Option<String>| {
        both(x.as_deref(), y.as_deref()).map(|(x, y)| (f64::from(u8::from(x == y)), 3))
    };
    push(
        "name",
        &rules.name,
        rules
            .name
            .as_ref()
            .and_then(|r| compare::names(r, &a.name_tokens, &b.name_tokens))
            .map(|s| (s, 3)),
    );
    push(
        "birth_date",
        &rules.birth_date,
        rules.birth_date.as_ref().and_then(|r| {
            both(a.birth_date.as_deref(), b.birth_date.as_deref())
                .map(|(x, y)| compare::dates(r, x, y))
        }),
    );
    push("gender", &rules.gender, exact(&a.gender, &b.gender));
    push("phone", &rules.phone, exact(&a.phone, &b.phone));
    let text = |rule: &Option<FieldRule>, words: bool, x: &Option<String>, y: &Option<String>| {
        let r = rule.as_ref()?;
        let (x, y) = both(x.as_deref(), y.as_deref())?;
        Some((
            if words {
                compare::words(r, x, y)
            } else {
                compare::strings(r, x, y)
            },
            3,
        ))
    };
    push(
        "village",
        &rules.village,
        text(&rules.village, false, &a.village, &b.village),
    );
    push(
        "address",
        &rules.address,
        text(&rules.address, true, &a.address, &b.address),
    );
    push(
        "postal_code",
        &rules.postal_code,
        text(&rules.postal_code, false, &a.postal_code, &b.postal_code),
    );
    out
}

/// Agreement on a year alone is likelier by chance than on a day: u for a full date, ×30 for a
/// month, ×365 for a year.
pub fn birth_date_u(rule: &FieldRule, precision: usize) -> f64 {
    (rule.u
        * match precision {
            1 => 365.0,
            2 => 30.0,
            _ => 1.0,
        })
    .min(0.5)
}

/// A common name agreeing by chance is likelier: u is at least the share of people carrying it
/// (family × given frequency). Returns u and a note for the explanation.
fn name_u(
    r: &FieldRule,
    similarity: f64,
    candidate: &Demographics,
    freq: &dyn Frequencies,
) -> (f64, String) {
    if !(r.term_frequency && similarity >= r.agree) {
        return (r.u, String::new());
    }
    let f = candidate.family.as_deref().and_then(|n| freq.family(n));
    let g = candidate.given.as_deref().and_then(|n| freq.given(n));
    let share = match (f, g) {
        (Some(f), Some(g)) => Some(f * g),
        (Some(x), None) | (None, Some(x)) => Some(x * r.u.sqrt()),
        (None, None) => None,
    };
    match share {
        Some(share) if share > r.u => {
            let u = share.min(0.5);
            (u, format!("; common name, u raised to {u:.5}"))
        }
        _ => (r.u, String::new()),
    }
}

pub fn decide(
    rules: &MatchingRules,
    systems: &[IdentifierMap],
    query: &Demographics,
    candidate: &Demographics,
    freq: &dyn Frequencies,
) -> Decision {
    // Fields, Fellegi–Sunter.
    let contributions: Vec<Contribution> = similarities(rules, query, candidate)
        .into_iter()
        .map(|c| match c.similarity {
            None => absent(c.field),
            Some(s) => {
                let r = c.rule;
                let (u, note) = match c.field {
                    "name" => name_u(r, s, candidate, freq),
                    "birth_date" => (birth_date_u(r, c.precision), String::new()),
                    _ => (r.u, String::new()),
                };
                let detail = match (c.field, c.precision) {
                    ("gender" | "phone", _) if s >= 1.0 => "the same".into(),
                    ("gender" | "phone", _) => "different".into(),
                    ("birth_date", p) => {
                        format!(
                            "similarity {s:.3} at the {}",
                            ["", "year", "month", "day"][p]
                        )
                    }
                    _ => format!("similarity {s:.3}{note}"),
                };
                Contribution {
                    field: c.field,
                    weight: weight(r, s, (r.m / u).log2()),
                    detail,
                }
            }
        })
        .collect();
    let weight_sum = rules.prior_log2_odds + contributions.iter().map(|c| c.weight).sum::<f64>();
    let probability = 1.0 / (1.0 + (-weight_sum).exp2());

    let grade_of = |p: f64| {
        if p >= rules.certain {
            Grade::Certain
        } else if p >= rules.probable {
            Grade::Probable
        } else if p >= rules.possible {
            Grade::Possible
        } else {
            Grade::None
        }
    };
    let mut decision = Decision {
        score: probability,
        grade: grade_of(probability),
        weight: weight_sum,
        contributions,
        rule: None,
        version: rules.version.clone(),
    };

    // Hard rules. Two different values in a single-valued system (two national IDs): certainly
    // two people, whatever else agrees.
    if let Some(s) = two_people(systems, query, candidate) {
        decision.score = 0.0;
        decision.grade = Grade::CertainlyNot;
        decision.rule = Some(format!(
            "two different values of {}, which a person has only one of",
            s.type_text.as_deref().unwrap_or(&s.system)
        ));
        return decision;
    }
    // The same value in a trusted unique system: one person, unless sex or birth date says
    // otherwise (a value typed into the wrong record).
    for s in systems.iter().filter(|s| s.trusted && s.unique) {
        if let (Some(a), Some(b)) = (query.identifier(&s.system), candidate.identifier(&s.system)) {
            if a.trim() != b.trim() {
                continue;
            }
            let name = s.type_text.as_deref().unwrap_or(&s.system);
            let sex_contradicts =
                matches!((&query.gender, &candidate.gender), (Some(x), Some(y)) if x != y);
            let date_contradicts = match (
                rules.birth_date.as_ref(),
                query.birth_date.as_deref(),
                candidate.birth_date.as_deref(),
            ) {
                (Some(r), Some(x), Some(y)) => compare::dates(r, x, y).0 < r.partial,
                _ => false,
            };
            if sex_contradicts || date_contradicts {
                decision.rule = Some(format!(
                    "the same {name}, but the {} contradicts it: scored on the fields alone",
                    if sex_contradicts { "sex" } else { "birth date" }
                ));
            } else {
                decision.score = 1.0;
                decision.grade = Grade::Certain;
                decision.rule = Some(format!("the same {name}, a trusted unique identifier"));
            }
            return decision;
        }
    }
    decision
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mapping::matching::{Comparator, Phonetic};

    /// A field rule for tests (calibrate's too).
    pub(crate) fn field(m: f64, u: f64) -> FieldRule {
        FieldRule {
            m,
            u,
            comparator: Comparator::JaroWinkler,
            phonetic: Phonetic::DoubleMetaphone,
            agree: 0.92,
            partial: 0.8,
            term_frequency: true,
            year_tolerance: 1,
        }
    }

    fn rules() -> MatchingRules {
        MatchingRules {
            version: "t+0".into(),
            prior_log2_odds: -10.0,
            certain: 0.9995,
            probable: 0.99,
            possible: 0.5,
            birth_year_window: 1,
            max_candidates: 100,
            link_on_write: true,
            name: Some(field(0.97, 0.001)),
            birth_date: Some(field(0.9, 0.0001)),
            gender: Some(field(0.98, 0.5)),
            phone: Some(field(0.5, 0.005)),
            village: Some(field(0.8, 0.1)),
            address: None,
            postal_code: None,
        }
    }

    struct Common(f64);
    impl Frequencies for Common {
        fn family(&self, _: &str) -> Option<f64> {
            Some(self.0)
        }
        fn given(&self, _: &str) -> Option<f64> {
            Some(self.0)
        }
    }

    fn person(family: &str, given: &str, born: &str) -> Demographics {
        Demographics {
            name_tokens: vec![family.into(), given.into()],
            family: Some(family.into()),
            given: Some(given.into()),
            birth_date: Some(born.into()),
            gender: Some("FEMALE".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_common_name_counts_for_less() {
        let (a, b) = (
            person("mwangi", "amina", "1990"),
            person("mwangi", "amina", "1990"),
        );
        let rare = decide(&rules(), &[], &a, &b, &Common(0.0001));
        let common = decide(&rules(), &[], &a, &b, &Common(0.2));
        let name = |d: &Decision| {
            d.contributions
                .iter()
                .find(|c| c.field == "name")
                .expect("the name is compared")
                .weight
        };
        assert!(name(&common) < name(&rare) - 3.0, "{common:?} {rare:?}");
        assert!(common.score < rare.score);
        assert!(common.contributions[0].detail.contains("common name"));
    }

    #[test]
    fn grades_follow_the_evidence() {
        let r = rules();
        let none = Common(0.0);
        let full = person("mwangi", "amina", "1990-04-12");
        let swapped = person("amina", "mwangi", "1990-04-12");
        assert_eq!(
            decide(&r, &[], &full, &swapped, &none).grade,
            Grade::Certain
        );
        let twin = person("mwangi", "akinyi", "1990-04-12");
        let d = decide(&r, &[], &full, &twin, &none);
        assert!(d.grade < Grade::Certain, "{d:?}");
        let year_only = person("mwangii", "amina", "1990");
        assert_eq!(
            decide(&r, &[], &full, &year_only, &none).grade,
            Grade::Possible
        );
        let stranger = person("otieno", "brian", "1975-09-30");
        assert_eq!(decide(&r, &[], &full, &stranger, &none).grade, Grade::None);
    }

    #[test]
    fn address_words_and_postal_codes_add_evidence() {
        let mut r = rules();
        r.address = Some(field(0.8, 0.001));
        r.postal_code = Some(FieldRule {
            comparator: crate::mapping::matching::Comparator::Exact,
            agree: 0.99,
            partial: 0.5,
            ..field(0.9, 0.01)
        });
        let at = |line: &str, post: &str| Demographics {
            address: Some(line.into()),
            postal_code: Some(post.into()),
            ..person("mwangi", "amina", "1990-04-12")
        };
        let weight_of = |d: &Decision, f: &str| {
            d.contributions
                .iter()
                .find(|c| c.field == f)
                .expect("the field is compared")
                .weight
        };
        let home = at("12 moi avenue", "00100");
        let typo = decide(&r, &[], &home, &at("12 moi avenu", "00100"), &Common(0.0));
        assert!(weight_of(&typo, "address") > 9.0, "{typo:?}");
        assert!(weight_of(&typo, "postal_code") > 6.0, "{typo:?}");
        // Another house in the same street: the number disagrees, so the line does.
        let next_door = decide(&r, &[], &home, &at("14 moi avenue", "00200"), &Common(0.0));
        assert!(weight_of(&next_door, "address") < 0.0, "{next_door:?}");
        assert!(weight_of(&next_door, "postal_code") < 0.0, "{next_door:?}");
        // Missing on one side: no evidence either way.
        let bare = decide(
            &r,
            &[],
            &home,
            &person("mwangi", "amina", "1990-04-12"),
            &Common(0.0),
        );
        assert_eq!(weight_of(&bare, "address"), 0.0);
    }
}
