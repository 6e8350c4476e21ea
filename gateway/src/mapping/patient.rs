//! `patient.toml`: how a FHIR Patient maps to a tracked entity and its attribute values.

use std::collections::HashMap;

use indexmap::IndexMap;

use serde::Deserialize;
use toml::Spanned;

use super::{known_list, Problem, Source};
use crate::tracker::metadata::{Attribute, Metadata};
use crate::tracker::value_type::ValueType;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    tracked_entity_type: Spanned<String>,
    #[serde(default)]
    identifier: Vec<RawIdentifier>,
    name: Option<RawName>,
    gender: Option<RawGender>,
    birth_date: Option<RawAttr>,
    /// Patient.deceased[x]: the date and time of death, or `true` when only the fact is known.
    deceased: Option<RawAttr>,
    #[serde(default)]
    telecom: Vec<RawTelecom>,
    address: Option<RawAddress>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentifier {
    system: Spanned<String>,
    attribute: Spanned<String>,
    type_text: Option<String>,
    /// Whether one value identifies one person; must agree with the attribute's `unique` flag
    /// in the metadata (the database enforces it). Defaults to the metadata.
    unique: Option<Spanned<bool>>,
    /// Whether a person has at most one value in this system (a national ID: true, the default;
    /// several facilities' record numbers: false).
    single_valued: Option<bool>,
    /// Whether `$match` may take the same value as proof of one person (unless sex or birth date
    /// contradict it). Only for unique systems.
    trusted: Option<Spanned<bool>>,
    /// Placeholder values that identify nobody (`0000000000`, `UNKNOWN`): never stored, never
    /// looked up, reported back when sent.
    #[serde(default)]
    ignore: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawName {
    family: Option<Spanned<String>>,
    given: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGender {
    attribute: Spanned<String>,
    codes: Spanned<IndexMap<String, Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttr {
    attribute: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelecom {
    system: Spanned<String>,
    #[serde(rename = "use")]
    use_: Option<Spanned<String>>,
    attribute: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAddress {
    text: Option<Spanned<String>>,
    line: Option<Spanned<String>>,
    city: Option<Spanned<String>>,
    district: Option<Spanned<String>>,
    state: Option<Spanned<String>>,
    postal_code: Option<Spanned<String>>,
    country: Option<Spanned<String>>,
}

#[derive(Debug, Clone)]
pub struct IdentifierMap {
    pub system: String,
    pub attribute_id: i64,
    pub type_text: Option<String>,
    pub unique: bool,
    pub single_valued: bool,
    pub trusted: bool,
    /// Placeholder values, compared ignoring case and surrounding spaces.
    pub ignore: Vec<String>,
}

impl IdentifierMap {
    /// Whether `value` is one of the declared placeholders of this system.
    pub fn is_placeholder(&self, value: &str) -> bool {
        let v = value.trim();
        self.ignore.iter().any(|p| p.eq_ignore_ascii_case(v))
    }
}

#[derive(Debug, Clone)]
pub struct GenderMap {
    pub attribute_id: i64,
    /// FHIR AdministrativeGender code → option code, in file order of the FHIR codes.
    pub codes: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct TelecomMap {
    pub system: String,
    pub use_: Option<String>,
    pub attribute_id: i64,
}

/// Address elements and the attribute each is held in. `json` is the FHIR element name.
#[derive(Debug, Clone)]
pub struct AddressField {
    pub json: &'static str,
    pub attribute_id: i64,
}

#[derive(Debug, Clone)]
pub struct PatientMapping {
    pub entity_type_id: i64,
    pub identifiers: Vec<IdentifierMap>,
    pub family: Option<i64>,
    pub given: Option<i64>,
    pub gender: Option<GenderMap>,
    pub birth_date: Option<i64>,
    /// A TEXT attribute holding deceasedDateTime, or `true` for deceasedBoolean.
    pub deceased: Option<i64>,
    pub telecom: Vec<TelecomMap>,
    pub address: Vec<AddressField>,
}

impl PatientMapping {
    /// The primary single-valued system: the first declared that is single-valued and unique
    /// (the national ID). Its holders' blocking keys are kept apart (migration 9).
    pub fn primary(&self) -> Option<&IdentifierMap> {
        self.identifiers
            .iter()
            .find(|i| i.single_valued && i.unique)
    }

    pub fn identifier(&self, system: &str) -> Option<&IdentifierMap> {
        self.identifiers.iter().find(|i| i.system == system)
    }

    /// Every attribute this mapping writes (a PUT replaces exactly these).
    pub fn attribute_ids(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.identifiers.iter().map(|i| i.attribute_id).collect();
        v.extend(self.family);
        v.extend(self.given);
        v.extend(self.gender.as_ref().map(|g| g.attribute_id));
        v.extend(self.birth_date);
        v.extend(self.deceased);
        v.extend(self.telecom.iter().map(|t| t.attribute_id));
        v.extend(self.address.iter().map(|a| a.attribute_id));
        v
    }
}

const GENDERS: &[&str] = &["male", "female", "other", "unknown"];
const TELECOM_SYSTEMS: &[&str] = &["phone", "fax", "email", "pager", "url", "sms", "other"];
const TELECOM_USES: &[&str] = &["home", "work", "temp", "old", "mobile"];

struct Checker<'a> {
    src: &'a Source,
    md: &'a Metadata,
    entity_type_attrs: Option<Vec<i64>>,
    used: HashMap<i64, usize>,
    problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    /// Resolves an attribute reference (code or UID), checking that it exists, belongs to the
    /// entity type and is not mapped twice.
    fn attribute(&mut self, r: &Spanned<String>, element: &str) -> Option<&'a Attribute> {
        let line = self.src.line_of(r.span().start);
        let Some(a) = self.md.attribute(r.get_ref()) else {
            let known = known_list(self.md.attributes.iter().filter_map(|a| a.code.as_deref()));
            self.problems.push(self.src.problem(
                r.span(),
                format!(
                    "{element}: unknown tracked entity attribute `{}` (known: {known})",
                    r.get_ref()
                ),
            ));
            return None;
        };
        if let Some(attrs) = &self.entity_type_attrs {
            if !attrs.contains(&a.id) {
                self.problems.push(self.src.problem(
                    r.span(),
                    format!(
                        "{element}: attribute `{}` is not an attribute of the tracked entity type",
                        r.get_ref()
                    ),
                ));
            }
        }
        if let Some(first) = self.used.insert(a.id, line) {
            self.problems.push(self.src.problem(r.span(), format!("{element}: attribute `{}` is already mapped at line {first}; one attribute holds one element", r.get_ref())));
        }
        Some(a)
    }

    fn value_type(
        &mut self,
        r: &Spanned<String>,
        a: &Attribute,
        element: &str,
        allowed: &[ValueType],
    ) {
        if !allowed.contains(&a.value_type) {
            self.problems.push(self.src.problem(r.span(), format!(
                    "{element}: attribute `{}` has value type {}, which cannot hold it (use one of {})",
                    r.get_ref(),
                    a.value_type.name(),
                    allowed.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
                )));
        }
    }
}

pub fn load(src: &Source, md: &Metadata) -> Result<PatientMapping, Vec<Problem>> {
    let raw: Raw = src.parse().map_err(|p| vec![p])?;
    let mut c = Checker {
        src,
        md,
        entity_type_attrs: None,
        used: HashMap::new(),
        problems: Vec::new(),
    };

    let entity_type = md.entity_type(raw.tracked_entity_type.get_ref());
    if entity_type.is_none() {
        let known = known_list(md.entity_types.iter().filter_map(|t| t.code.as_deref()));
        c.problems.push(src.problem(
            raw.tracked_entity_type.span(),
            format!(
                "unknown tracked entity type `{}` (known: {known})",
                raw.tracked_entity_type.get_ref()
            ),
        ));
    }
    c.entity_type_attrs = entity_type.map(|t| t.attribute_ids.clone());

    let mut identifiers: Vec<IdentifierMap> = Vec::new();
    let mut systems: HashMap<String, usize> = HashMap::new();
    for i in &raw.identifier {
        let system = i.system.get_ref().trim().to_string();
        let line = src.line_of(i.system.span().start);
        if !system.contains(':') || system.contains(char::is_whitespace) {
            c.problems.push(src.problem(i.system.span(), format!("identifier system `{system}` is not an absolute URI (e.g. http://example.org/national-id)")));
        }
        if let Some(first) = systems.insert(system.clone(), line) {
            c.problems.push(src.problem(
                i.system.span(),
                format!("identifier system `{system}` is already mapped at line {first}"),
            ));
        }
        if let Some(a) = c.attribute(&i.attribute, "identifier") {
            if let Some(u) = &i.unique {
                if *u.get_ref() != a.unique {
                    c.problems.push(src.problem(u.span(), format!(
                        "identifier system `{system}`: unique = {} but attribute `{}` is {} in the metadata; the database enforces the metadata, so make them agree",
                        u.get_ref(),
                        i.attribute.get_ref(),
                        if a.unique { "unique" } else { "not unique" }
                    )));
                }
            }
            if let Some(t) = &i.trusted {
                if *t.get_ref() && !a.unique {
                    c.problems.push(src.problem(t.span(), format!(
                        "identifier system `{system}`: trusted = true needs a unique attribute; `{}` is not unique, so one value may name several people",
                        i.attribute.get_ref()
                    )));
                }
            }
            let mut ignore: Vec<String> = Vec::new();
            for p in &i.ignore {
                let v = p.get_ref().trim();
                if v.is_empty() {
                    c.problems.push(src.problem(p.span(), format!("identifier system `{system}`: an empty `ignore` value; list the placeholder values that identify nobody, e.g. \"0000000000\"")));
                } else if ignore.iter().any(|x| x.eq_ignore_ascii_case(v)) {
                    c.problems.push(src.problem(
                        p.span(),
                        format!("identifier system `{system}`: `{v}` is listed twice in `ignore`"),
                    ));
                } else {
                    ignore.push(v.to_owned());
                }
            }
            identifiers.push(IdentifierMap {
                system,
                attribute_id: a.id,
                type_text: i.type_text.clone(),
                unique: a.unique,
                single_valued: i.single_valued.unwrap_or(true),
                trusted: i.trusted.as_ref().is_some_and(|t| *t.get_ref()),
                ignore,
            });
        }
    }

    let (mut family, mut given) = (None, None);
    if let Some(n) = &raw.name {
        if let Some(f) = &n.family {
            family = c.attribute(f, "name.family").map(|a| a.id);
        }
        if let Some(g) = &n.given {
            given = c.attribute(g, "name.given").map(|a| a.id);
        }
    }

    let mut gender = None;
    if let Some(g) = &raw.gender {
        if let Some(a) = c.attribute(&g.attribute, "gender") {
            let set = a.option_set_id.and_then(|id| md.option_set_by_id(id));
            if set.is_none() {
                c.problems.push(src.problem(
                    g.attribute.span(),
                    format!(
                        "gender: attribute `{}` has no option set to hold the gender codes",
                        g.attribute.get_ref()
                    ),
                ));
            }
            let mut codes = Vec::new();
            for (fhir, option) in g.codes.get_ref() {
                if !GENDERS.contains(&fhir.as_str()) {
                    c.problems.push(src.problem(
                        option.span(),
                        format!(
                            "gender.codes: `{fhir}` is not a FHIR AdministrativeGender code ({})",
                            GENDERS.join(", ")
                        ),
                    ));
                }
                if let Some(set) = set {
                    if set.option(option.get_ref()).is_none() {
                        let known = known_list(set.options.iter().map(|o| o.code.as_str()));
                        c.problems.push(src.problem(option.span(), format!("gender.codes.{fhir}: `{}` is not an option of option set {} (options: {known})", option.get_ref(), set.label())));
                    }
                }
                if let Some((other, _)) = codes
                    .iter()
                    .find(|(_, o): &&(String, String)| o == option.get_ref())
                {
                    c.problems.push(src.problem(option.span(), format!("gender.codes.{fhir}: option `{}` is already the target of `{other}`; reading back could not tell them apart", option.get_ref())));
                }
                codes.push((fhir.clone(), option.get_ref().clone()));
            }
            for required in GENDERS {
                if !g.codes.get_ref().contains_key(*required) {
                    c.problems.push(src.problem(g.codes.span(), format!("gender.codes: no option for FHIR gender `{required}`; every AdministrativeGender code needs one")));
                }
            }
            gender = Some(GenderMap {
                attribute_id: a.id,
                codes,
            });
        }
    }

    let mut birth_date = None;
    if let Some(b) = &raw.birth_date {
        if let Some(a) = c.attribute(&b.attribute, "birth_date") {
            c.value_type(
                &b.attribute,
                a,
                "birth_date",
                &[ValueType::Date, ValueType::Age],
            );
            birth_date = Some(a.id);
        }
    }

    let mut deceased = None;
    if let Some(d) = &raw.deceased {
        if let Some(a) = c.attribute(&d.attribute, "deceased") {
            c.value_type(&d.attribute, a, "deceased", &[ValueType::Text]);
            deceased = Some(a.id);
        }
    }

    let mut telecom: Vec<TelecomMap> = Vec::new();
    for t in &raw.telecom {
        let system = t.system.get_ref().clone();
        if !TELECOM_SYSTEMS.contains(&system.as_str()) {
            c.problems.push(src.problem(
                t.system.span(),
                format!(
                    "telecom: `{system}` is not a ContactPoint system ({})",
                    TELECOM_SYSTEMS.join(", ")
                ),
            ));
        }
        let use_ = t.use_.as_ref().map(|u| u.get_ref().clone());
        if let (Some(u), Some(span)) = (&use_, t.use_.as_ref().map(|u| u.span())) {
            if !TELECOM_USES.contains(&u.as_str()) {
                c.problems.push(src.problem(
                    span,
                    format!(
                        "telecom: `{u}` is not a ContactPoint use ({})",
                        TELECOM_USES.join(", ")
                    ),
                ));
            }
        }
        if telecom.iter().any(|x| x.system == system && x.use_ == use_) {
            c.problems.push(src.problem(
                t.system.span(),
                format!(
                        "telecom: system `{system}`{} is mapped twice",
                        use_.as_ref()
                            .map(|u| format!(" with use `{u}`"))
                            .unwrap_or_default()
                    ),
            ));
        }
        if let Some(a) = c.attribute(&t.attribute, "telecom") {
            let allowed: &[ValueType] = match system.as_str() {
                "phone" | "fax" | "sms" | "pager" => &[ValueType::PhoneNumber, ValueType::Text],
                "email" => &[ValueType::Email, ValueType::Text],
                _ => &[ValueType::Text, ValueType::Url],
            };
            c.value_type(&t.attribute, a, "telecom", allowed);
            telecom.push(TelecomMap {
                system,
                use_,
                attribute_id: a.id,
            });
        }
    }

    let mut address = Vec::new();
    if let Some(ad) = &raw.address {
        let fields: [(&'static str, &Option<Spanned<String>>); 7] = [
            ("text", &ad.text),
            ("line", &ad.line),
            ("city", &ad.city),
            ("district", &ad.district),
            ("state", &ad.state),
            ("postalCode", &ad.postal_code),
            ("country", &ad.country),
        ];
        for (json, r) in fields {
            if let Some(r) = r {
                if let Some(a) = c.attribute(r, &format!("address.{json}")) {
                    address.push(AddressField {
                        json,
                        attribute_id: a.id,
                    });
                }
            }
        }
    }

    if !c.problems.is_empty() {
        c.problems.sort_by_key(|p| p.line);
        return Err(c.problems);
    }
    Ok(PatientMapping {
        entity_type_id: entity_type.map(|t| t.id).unwrap_or_default(),
        identifiers,
        family,
        given,
        gender,
        birth_date,
        deceased,
        telecom,
        address,
    })
}
