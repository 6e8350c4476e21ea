//! The tracker domain: rules and scope checks around the store. Services here take translated
//! input, apply the registry's rules (ownership, uniqueness, versions, scope) and call the store,
//! always inside the caller's transaction.

pub mod encounters;
pub mod metadata;
pub mod model;
pub mod observations;
pub mod patients;
pub mod value_type;

use rand::Rng;

use crate::mapping::MappingSet;
use metadata::Metadata;

/// What services need besides the connection: the metadata and mappings in force for this request.
pub struct Env<'a> {
    pub md: &'a Metadata,
    pub mappings: &'a MappingSet,
    /// Refuse input that no mapping holds (instead of storing the rest and reporting it).
    pub strict: bool,
    /// Owner of Patients sent without managingOrganization, when configured.
    pub default_org_unit: Option<i64>,
}

/// A new DHIS2-style UID: a letter then ten letters or digits.
pub fn new_uid() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(11);
    s.push(LETTERS[rng.gen_range(0..LETTERS.len())] as char);
    for _ in 0..10 {
        s.push(ALNUM[rng.gen_range(0..ALNUM.len())] as char);
    }
    s
}

pub fn is_uid(s: &str) -> bool {
    s.len() == 11
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Lower-case, accent-free form used for FHIR string search ("Nyambura" and "NYAMBÚRA" match).
pub fn search_form(s: &str) -> String {
    deunicode::deunicode(s).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_have_dhis2_shape() {
        for _ in 0..100 {
            assert!(is_uid(&new_uid()));
        }
        assert!(!is_uid("1abcdefghij"));
        assert!(!is_uid("abc"));
    }

    #[test]
    fn search_form_folds_case_and_accents() {
        assert_eq!(search_form("Nyambúra"), "nyambura");
        assert_eq!(search_form("ÖZİL"), search_form("ozil"));
    }
}
