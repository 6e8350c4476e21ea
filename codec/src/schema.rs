//! Type information about FHIR R4 elements, so that the walkers in `walk.rs` and `xml.rs` know
//! which JSON/XML element is a resource, a complex type, a backbone element or a primitive of
//! which type.
//!
//! Most of it comes from fhirbolt-shared's generated tables (the same ones fhirbolt uses):
//! `ELEMENT_MAP` lists the elements of every type and backbone element, `TYPE_HINTS` names the
//! complex type of complex elements, which elements repeat, and which primitives are boolean,
//! integer or decimal. What those tables do not say is which *string-like* primitive an element
//! is (date? code? uri?); that comes from the hand-written table in `types_table.rs` and, for
//! choice elements (`value[x]`, `effective[x]`...), from the suffix of the element name.

use fhirbolt_shared::element_map::{r4::ELEMENT_MAP, ElementSet};
use fhirbolt_shared::type_hints::r4::TYPE_HINTS;

use std::cell::RefCell;
use std::collections::HashMap;

use rustc_hash::FxBuildHasher;

use crate::types_table;

/// FHIR primitive types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prim {
    Boolean,
    Integer,
    Integer64,
    PositiveInt,
    UnsignedInt,
    Decimal,
    Date,
    DateTime,
    Instant,
    Time,
    Code,
    Id,
    Uri,
    Url,
    Canonical,
    Oid,
    Uuid,
    String,
    Markdown,
    Base64Binary,
    Xhtml,
    /// A primitive element that neither fhirbolt's hints nor our table type; its value is
    /// accepted as it is (fhirbolt has already checked it is a JSON string).
    Unknown,
}

impl Prim {
    /// The FHIR name of the type, as used in FHIRPath `ofType()` and in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Prim::Boolean => "boolean",
            Prim::Integer => "integer",
            Prim::Integer64 => "integer64",
            Prim::PositiveInt => "positiveInt",
            Prim::UnsignedInt => "unsignedInt",
            Prim::Decimal => "decimal",
            Prim::Date => "date",
            Prim::DateTime => "dateTime",
            Prim::Instant => "instant",
            Prim::Time => "time",
            Prim::Code => "code",
            Prim::Id => "id",
            Prim::Uri => "uri",
            Prim::Url => "url",
            Prim::Canonical => "canonical",
            Prim::Oid => "oid",
            Prim::Uuid => "uuid",
            Prim::String => "string",
            Prim::Markdown => "markdown",
            Prim::Base64Binary => "base64Binary",
            Prim::Xhtml => "xhtml",
            Prim::Unknown => "primitive",
        }
    }

    /// The primitive type whose name, capitalised, ends a choice element (`valueDateTime`).
    fn from_choice_suffix(suffix: &str) -> Option<Prim> {
        Some(match suffix {
            "Boolean" => Prim::Boolean,
            "Integer" => Prim::Integer,
            "Integer64" => Prim::Integer64,
            "PositiveInt" => Prim::PositiveInt,
            "UnsignedInt" => Prim::UnsignedInt,
            "Decimal" => Prim::Decimal,
            "Date" => Prim::Date,
            "DateTime" => Prim::DateTime,
            "Instant" => Prim::Instant,
            "Time" => Prim::Time,
            "Code" => Prim::Code,
            "Id" => Prim::Id,
            "Uri" => Prim::Uri,
            "Url" => Prim::Url,
            "Canonical" => Prim::Canonical,
            "Oid" => Prim::Oid,
            "Uuid" => Prim::Uuid,
            "String" => Prim::String,
            "Markdown" => Prim::Markdown,
            "Base64Binary" => Prim::Base64Binary,
            _ => return None,
        })
    }
}

/// What an element holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A whole resource (`contained`, `Bundle.entry.resource`, `Parameters.parameter.resource`).
    Resource,
    /// A complex datatype or backbone element: the key of its element list in `ELEMENT_MAP`
    /// (`HumanName`, `Patient.contact`).
    Complex(&'static str),
    Primitive(Prim),
}

/// One element of a type, as resolved by [`child`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Child<'n> {
    pub kind: Kind,
    /// Whether FHIR JSON writes the element as an array (cardinality ..*).
    pub array: bool,
    /// For a choice element (`valueDateTime`), its base name and type (`value`, `dateTime`):
    /// FHIRPath names it `value.ofType(dateTime)`, and only one type may be present.
    pub choice: Option<(&'n str, &'n str)>,
}

/// The elements of a type or backbone element (`ELEMENT_MAP` key).
pub(crate) fn elements(key: &str) -> Option<&'static ElementSet> {
    ELEMENT_MAP.get(key).copied()
}

/// Every resource has `implicitRules` and no datatype or backbone element has, which tells
/// resources apart from datatypes in `ELEMENT_MAP` (both are keys without a dot).
fn is_resource_key(key: &str) -> bool {
    elements(key).is_some_and(|set| set.contains("implicitRules"))
}

/// The `ELEMENT_MAP` key of a resource type name, if `name` is an R4 resource type.
pub(crate) fn resource_type(name: &str) -> Option<&'static str> {
    let (key, set) = ELEMENT_MAP.get_entry(name)?;
    (set.contains("implicitRules") && !key.contains('.')).then_some(*key)
}

/// Whether `key` (a `Kind::Complex` key) is a resource, i.e. has `id` of type id, `meta`, ...
pub(crate) fn is_resource(key: &str) -> bool {
    !key.contains('.') && is_resource_key(key)
}

/// Whether `s` names a FHIR datatype, as the suffix of a choice element does.
fn is_type_name(s: &str) -> bool {
    Prim::from_choice_suffix(s).is_some()
        || (s.starts_with(|c: char| c.is_ascii_uppercase())
            && elements(s).is_some()
            && !is_resource_key(s))
}

/// Splits a choice element name into base and type (`valueDateTime` -> `value`, `DateTime`).
///
/// The name alone is not enough (`birthDate` ends with `Date` and `postalCode` with `Code`, but
/// neither is a choice), so a split only counts when a sibling with the same base and another
/// type suffix exists: `deceasedBoolean` is a choice because `Patient` also has
/// `deceasedDateTime`. Every choice element of R4 has at least two types.
fn choice_split<'n>(set: &ElementSet, name: &'n str) -> Option<(&'n str, &'n str)> {
    for (i, c) in name.char_indices().skip(1) {
        if !c.is_ascii_uppercase() {
            continue;
        }
        let (base, suffix) = name.split_at(i);
        if !is_type_name(suffix) {
            continue;
        }
        let has_sibling = set.iter().any(|other| {
            *other != name
                && other.len() > base.len()
                && other.starts_with(base)
                && is_type_name(&other[base.len()..])
        });
        if has_sibling {
            return Some((base, suffix));
        }
    }
    None
}

/// A resolved [`Child`] without the borrow of its name: where the choice's base ends, and the
/// choice's type name when it is not the name's own suffix.
#[derive(Clone, Copy)]
struct Resolved {
    kind: Kind,
    array: bool,
    choice: Option<(usize, Option<&'static str>)>,
}

type Memo = HashMap<&'static str, HashMap<Box<str>, Resolved, FxBuildHasher>, FxBuildHasher>;

thread_local! {
    /// What [`child`] resolved, per parent and name. Resolving reads several generated tables
    /// by string (about 8 % of the gateway's CPU on transaction Bundles, profiled); the answers
    /// never change. Only elements that exist are kept, so a client sending unknown names
    /// cannot grow it: it is bounded by the elements of R4.
    static MEMO: RefCell<Memo> = RefCell::default();
}

/// Resolves the element `name` (a JSON key without a leading `_`) of the type or backbone
/// element `parent` (an `ELEMENT_MAP` key). `None` when the type has no such element.
///
/// `scratch` is a reusable buffer for the dotted path used to query the tables.
pub(crate) fn child<'n>(
    parent: &'static str,
    name: &'n str,
    scratch: &mut String,
) -> Option<Child<'n>> {
    let known = MEMO.with(|m| m.borrow().get(parent).and_then(|c| c.get(name)).copied());
    let r = match known {
        Some(r) => r,
        None => {
            let c = resolve(parent, name, scratch)?;
            let r = Resolved {
                kind: c.kind,
                array: c.array,
                choice: c
                    .choice
                    .map(|(base, _)| (base.len(), static_type_name(c.kind))),
            };
            MEMO.with(|m| {
                m.borrow_mut()
                    .entry(parent)
                    .or_default()
                    .insert(name.into(), r)
            });
            r
        }
    };
    Some(Child {
        kind: r.kind,
        array: r.array,
        choice: r.choice.map(|(at, ty)| {
            let (base, suffix) = name.split_at(at);
            (base, ty.unwrap_or(suffix))
        }),
    })
}

/// The type name [`type_name_for_path`] gives when it is not the element name's suffix.
fn static_type_name(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Primitive(p) if p != Prim::Unknown => Some(p.name()),
        _ => None,
    }
}

fn resolve<'n>(parent: &str, name: &'n str, scratch: &mut String) -> Option<Child<'n>> {
    let set = elements(parent)?;
    if !set.contains(name) {
        return None;
    }
    let in_resource = is_resource(parent);
    let choice = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        choice_split(set, name)
    } else {
        None
    };
    let simple = |kind| {
        Some(Child {
            kind,
            array: false,
            choice: None,
        })
    };

    // Elements inherited from Element / Resource / DomainResource are not in the type hints.
    match name {
        "extension" | "modifierExtension" => {
            return Some(Child {
                kind: Kind::Complex("Extension"),
                array: true,
                choice: None,
            })
        }
        // Resource.id is an id; Element.id (of datatypes and backbone elements) a string.
        "id" => {
            return simple(Kind::Primitive(if in_resource {
                Prim::Id
            } else {
                Prim::String
            }))
        }
        _ => {}
    }
    if in_resource {
        match name {
            "meta" => return simple(Kind::Complex("Meta")),
            "text" => return simple(Kind::Complex("Narrative")),
            "contained" => {
                return Some(Child {
                    kind: Kind::Resource,
                    array: true,
                    choice: None,
                })
            }
            "implicitRules" => return simple(Kind::Primitive(Prim::Uri)),
            "language" => return simple(Kind::Primitive(Prim::Code)),
            _ => {}
        }
    }

    scratch.clear();
    scratch.push_str(parent);
    scratch.push('.');
    scratch.push_str(name);
    let path = scratch.as_str();
    let hints = &TYPE_HINTS;
    let array = hints.array_paths.contains(path);

    let kind = if let Some(ty) = hints.type_paths.get(path) {
        if *ty == "Resource" {
            Kind::Resource
        } else {
            Kind::Complex(ty)
        }
    } else if let Some(target) = hints.content_reference_paths.get(path) {
        // e.g. `Parameters.parameter.part` has the elements of `Parameters.parameter`.
        Kind::Complex(target)
    } else if let Some((key, _)) = ELEMENT_MAP.get_entry(path) {
        Kind::Complex(key)
    } else {
        Kind::Primitive(primitive_type(path, choice))
    };

    let choice = choice.map(|(base, suffix)| (base, type_name_for_path(suffix, kind)));
    Some(Child {
        kind,
        array,
        choice,
    })
}

/// FHIRPath `ofType()` spells primitive types in lower camel case (`dateTime`) and complex
/// types as they are (`Quantity`).
fn type_name_for_path(suffix: &str, kind: Kind) -> &str {
    match kind {
        Kind::Primitive(p) if p != Prim::Unknown => p.name(),
        _ => suffix,
    }
}

fn primitive_type(path: &str, choice: Option<(&str, &str)>) -> Prim {
    let hints = &TYPE_HINTS;
    if hints.boolean_paths.contains(path) {
        Prim::Boolean
    } else if hints.positive_integer_paths.contains(path) {
        Prim::PositiveInt
    } else if hints.unsigned_integer_paths.contains(path) {
        Prim::UnsignedInt
    } else if hints.integer64_paths.contains(path) {
        Prim::Integer64
    } else if hints.integer_paths.contains(path) {
        Prim::Integer
    } else if hints.decimal_paths.contains(path) {
        Prim::Decimal
    } else if let Some(p) = types_table::lookup(path) {
        p
    } else if let Some(p) = choice.and_then(|(_, suffix)| Prim::from_choice_suffix(suffix)) {
        p
    } else {
        Prim::Unknown
    }
}

/// All primitive element paths fhirbolt knows, for the table-coverage test.
#[cfg(test)]
pub(crate) fn all_primitive_paths() -> impl Iterator<Item = &'static str> {
    TYPE_HINTS.all_primitives_paths.iter().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(parent: &'static str, name: &str) -> Option<Kind> {
        child(parent, name, &mut String::new()).map(|c| c.kind)
    }

    #[test]
    fn resolves_common_elements() {
        assert_eq!(resolve("Patient", "id"), Some(Kind::Primitive(Prim::Id)));
        assert_eq!(
            resolve("HumanName", "id"),
            Some(Kind::Primitive(Prim::String))
        );
        assert_eq!(resolve("Patient", "meta"), Some(Kind::Complex("Meta")));
        assert_eq!(resolve("Patient", "text"), Some(Kind::Complex("Narrative")));
        assert_eq!(
            resolve("HumanName", "text"),
            Some(Kind::Primitive(Prim::String))
        );
        assert_eq!(resolve("Patient", "contained"), Some(Kind::Resource));
        assert_eq!(resolve("Patient", "name"), Some(Kind::Complex("HumanName")));
        assert_eq!(
            resolve("Patient", "contact"),
            Some(Kind::Complex("Patient.contact"))
        );
        assert_eq!(
            resolve("Patient", "birthDate"),
            Some(Kind::Primitive(Prim::Date))
        );
        assert_eq!(resolve("Patient", "foo"), None);
        assert_eq!(
            resolve("Bundle", "entry"),
            Some(Kind::Complex("Bundle.entry"))
        );
        assert_eq!(resolve("Bundle.entry", "resource"), Some(Kind::Resource));
        assert_eq!(
            resolve("Bundle.entry", "link"),
            Some(Kind::Complex("Bundle.link"))
        );
        assert_eq!(
            resolve("Parameters.parameter", "part"),
            Some(Kind::Complex("Parameters.parameter"))
        );
        assert_eq!(
            resolve("Meta", "lastUpdated"),
            Some(Kind::Primitive(Prim::Instant))
        );
        assert_eq!(
            resolve("Meta", "versionId"),
            Some(Kind::Primitive(Prim::Id))
        );
        assert_eq!(
            resolve("Quantity", "value"),
            Some(Kind::Primitive(Prim::Decimal))
        );
        assert_eq!(
            resolve("ContactPoint", "rank"),
            Some(Kind::Primitive(Prim::PositiveInt))
        );
        assert_eq!(
            resolve("Address", "postalCode"),
            Some(Kind::Primitive(Prim::String))
        );
    }

    #[test]
    fn resolves_choice_elements_by_suffix() {
        let mut s = String::new();
        let c = child("Observation", "effectiveDateTime", &mut s).unwrap();
        assert_eq!(c.kind, Kind::Primitive(Prim::DateTime));
        assert_eq!(c.choice, Some(("effective", "dateTime")));
        let c = child("Observation", "valueQuantity", &mut s).unwrap();
        assert_eq!(c.kind, Kind::Complex("Quantity"));
        assert_eq!(c.choice, Some(("value", "Quantity")));
        let c = child("Patient", "multipleBirthInteger", &mut s).unwrap();
        assert_eq!(c.kind, Kind::Primitive(Prim::Integer));
        assert_eq!(c.choice, Some(("multipleBirth", "integer")));
        let c = child("Extension", "valueCode", &mut s).unwrap();
        assert_eq!(c.kind, Kind::Primitive(Prim::Code));
        let c = child("Parameters.parameter", "valueInstant", &mut s).unwrap();
        assert_eq!(c.kind, Kind::Primitive(Prim::Instant));
        // Not choices, although the names end with a type name.
        assert!(child("Patient", "birthDate", &mut s)
            .unwrap()
            .choice
            .is_none());
        assert!(child("Address", "postalCode", &mut s)
            .unwrap()
            .choice
            .is_none());
    }

    #[test]
    fn a_remembered_element_resolves_as_the_first_time() {
        let mut s = String::new();
        for (parent, name) in [
            ("Observation", "effectiveDateTime"),
            ("Observation", "valueQuantity"),
            ("Extension", "valueCode"),
            ("Patient", "birthDate"),
            ("Patient", "contact"),
            ("HumanName", "id"),
        ] {
            // Names from the heap: the memo must lend out the caller's name, not its own.
            let first = name.to_string();
            let a = format!("{:?}", child(parent, &first, &mut s));
            let again = name.to_string();
            let b = format!("{:?}", child(parent, &again, &mut s));
            assert_eq!(a, b, "{parent}.{name}");
            assert_eq!(a, format!("{:?}", resolve_uncached(parent, name)));
        }
        assert!(child("Patient", "noSuchThing", &mut s).is_none());
    }

    fn resolve_uncached<'n>(parent: &str, name: &'n str) -> Option<Child<'n>> {
        super::resolve(parent, name, &mut String::new())
    }

    #[test]
    fn knows_resource_types() {
        assert_eq!(resource_type("Patient"), Some("Patient"));
        assert_eq!(resource_type("Bundle"), Some("Bundle"));
        assert_eq!(resource_type("Binary"), Some("Binary"));
        assert_eq!(resource_type("HumanName"), None);
        assert_eq!(resource_type("Patient.contact"), None);
        assert_eq!(resource_type("Foo"), None);
    }
}
