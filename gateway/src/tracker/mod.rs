//! The tracker domain: rules and scope checks around the store. Services here take translated
//! input, apply the registry's rules (ownership, uniqueness, versions, scope) and call the store,
//! always inside the caller's transaction.

pub mod encounters;
pub mod episodes;
pub mod identity;
pub mod merge;
pub mod metadata;
pub mod model;
pub mod observations;
pub mod offline;
pub mod patients;
pub mod relationships;
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

/// Rebuilds a record of an earlier version from `(current record, version, time, snapshot)`.
pub type Rebuild<'a, T> =
    &'a dyn Fn(&T, i32, chrono::DateTime<chrono::Utc>, Option<serde_json::Value>) -> Option<T>;

/// One version of a record from the change log: 404 when there is no such version, 410 when it
/// is the deletion.
pub fn version_of<T>(
    s: &mut crate::store::Scoped,
    resource_type: &str,
    uid: &str,
    version: i32,
    current: &T,
    rebuild: Rebuild<T>,
) -> Result<T, crate::error::Error> {
    use crate::error::Error;
    let (v, op, at, state) = crate::store::logs::version(s.conn()?, resource_type, uid, version)?
        .ok_or_else(|| {
        Error::NotFound(format!("{resource_type}/{uid} has no version {version}"))
    })?;
    if op == "delete" {
        return Err(Error::Gone(format!(
            "version {version} of {resource_type}/{uid} is its deletion"
        )));
    }
    rebuild(current, v, at, state).ok_or_else(|| {
        Error::Internal(format!(
            "unreadable snapshot of {resource_type}/{uid} version {version}"
        ))
    })
}

/// Every version of a record from the change log, newest first (deletions without a record).
pub fn versions_of<T>(
    s: &mut crate::store::Scoped,
    resource_type: &str,
    uid: &str,
    current: &T,
    rebuild: Rebuild<T>,
) -> Result<Vec<model::VersionOf<T>>, crate::error::Error> {
    Ok(crate::store::logs::versions(s.conn()?, resource_type, uid)?
        .into_iter()
        .map(|(v, op, at, state)| {
            let rec = if op == "delete" {
                None
            } else {
                rebuild(current, v, at, state)
            };
            (v, op, at, rec)
        })
        .collect())
}

/// What the change log needs of a record: its uid, version and time.
pub trait Stamped {
    fn stamp(&self) -> (&str, i32, chrono::DateTime<chrono::Utc>);

    /// The person the record belongs to, for the access record (`crate::audit`).
    fn person(&self) -> Option<&str> {
        None
    }
}

impl Stamped for model::PersonRecord {
    fn stamp(&self) -> (&str, i32, chrono::DateTime<chrono::Utc>) {
        (&self.uid, self.version, self.last_updated)
    }
}

impl Stamped for model::EventRecord {
    fn stamp(&self) -> (&str, i32, chrono::DateTime<chrono::Utc>) {
        (&self.uid, self.version, self.last_updated)
    }

    fn person(&self) -> Option<&str> {
        Some(&self.tracked_entity_uid)
    }
}

impl Stamped for model::DataValueRecord {
    fn stamp(&self) -> (&str, i32, chrono::DateTime<chrono::Utc>) {
        (&self.uid, self.version, self.last_updated)
    }

    fn person(&self) -> Option<&str> {
        Some(&self.tracked_entity_uid)
    }
}

/// Records a written version: its tracker snapshot in the change log and the original request in
/// the inbound log, under the mapping set that translated it.
pub fn record_write<'a, R: Stamped>(
    s: &mut crate::store::Scoped,
    env: &'a Env,
    resource_type: &'a str,
    record: &'a R,
    operation: &'a str,
    state: serde_json::Value,
    inbound: crate::store::logs::Inbound<'a>,
) {
    let (uid, version, at) = record.stamp();
    if let Some(p) = record.person() {
        s.touched.patient.insert(format!("Patient/{p}"));
    }
    let change = crate::store::logs::Change {
        resource_type,
        uid,
        version,
        operation,
        at,
        mapping_version: &env.mappings.version,
        state: Some(state),
    };
    crate::store::logs::record_write(s, change, inbound);
}

/// 403 unless the caller may write at `org_unit_id` (their capture scope); `what` they tried, as
/// a verb phrase ("record an encounter", "transfer records").
pub fn check_capture_at(
    s: &crate::store::Scoped,
    env: &Env,
    org_unit_id: i64,
    what: &str,
) -> Result<(), crate::error::Error> {
    use crate::error::Error;
    let ou = env
        .md
        .org_unit_by_id(org_unit_id)
        .ok_or_else(|| Error::Internal("org unit missing from metadata".into()))?;
    if !s.ctx.capture.contains(&ou.path) {
        return Err(Error::Forbidden(format!(
            "you may not {what} at {} (Organization/{})",
            ou.name, ou.uid
        )));
    }
    Ok(())
}

/// 403 unless the caller has access to the program (its registration's programs): DHIS2's
/// program access, for writes. Reads are filtered in SQL (`store::ProgramScope`).
pub fn check_program(
    s: &crate::store::Scoped,
    env: &Env,
    program_id: i64,
) -> Result<(), crate::error::Error> {
    match env.md.programs.iter().find(|p| p.id == program_id) {
        Some(p) => s.ctx.require_program(&p.uid, &p.name),
        None => Ok(()),
    }
}

/// [`check_program`] for the program a stage belongs to.
pub fn check_program_of_stage(
    s: &crate::store::Scoped,
    env: &Env,
    stage_id: i64,
) -> Result<(), crate::error::Error> {
    match env.md.stages.iter().find(|x| x.id == stage_id) {
        Some(stage) => check_program(s, env, stage.program_id),
        None => Ok(()),
    }
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
