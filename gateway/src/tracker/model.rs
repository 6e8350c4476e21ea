//! Tracker records as the domain sees them (independent of FHIR and of diesel rows).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One attribute value to write, with the FHIR element it came from (for error messages).
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeValue {
    pub attribute_id: i64,
    pub value: String,
    pub expression: String,
}

/// A tracked entity (person) at one version: what a Patient is rendered from.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonRecord {
    pub id: i64,
    pub uid: String,
    pub version: i32,
    pub last_updated: DateTime<Utc>,
    pub org_unit_id: i64,
    pub inactive: bool,
    pub deleted: bool,
    /// The survivor this record was merged into (`Patient/$merge`), while the merge stands.
    pub merged_into: Option<i64>,
    /// attribute id → stored value
    pub values: BTreeMap<i64, String>,
}

/// The tracker-level snapshot kept in the change log for each version (UIDs, not database ids,
/// so that it stays meaningful across databases).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonSnapshot {
    pub org_unit: String,
    pub inactive: bool,
    pub attributes: BTreeMap<String, String>,
}

/// One recorded version of a record: (version, operation, when, the record unless deleted).
pub type VersionOf<T> = (i32, String, DateTime<Utc>, Option<T>);

/// An event, rendered as a FHIR Encounter.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub id: i64,
    pub uid: String,
    pub version: i32,
    pub last_updated: DateTime<Utc>,
    pub stage_id: i64,
    pub org_unit_id: i64,
    pub status: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub tracked_entity_id: i64,
    pub tracked_entity_uid: String,
    pub enrollment_id: i64,
    pub enrollment_uid: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSnapshot {
    pub stage: String,
    pub org_unit: String,
    pub status: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub enrollment: String,
    pub tracked_entity: String,
}

/// One data value of an event, rendered as a FHIR Observation.
#[derive(Debug, Clone, PartialEq)]
pub struct DataValueRecord {
    pub id: i64,
    pub uid: String,
    pub version: i32,
    pub last_updated: DateTime<Utc>,
    pub event_id: i64,
    pub event_uid: String,
    pub data_element_id: i64,
    pub tracked_entity_id: i64,
    pub tracked_entity_uid: String,
    pub value: String,
    pub observed_at: Option<DateTime<Utc>>,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataValueSnapshot {
    pub event: String,
    pub data_element: String,
    pub value: String,
    pub observed_at: Option<DateTime<Utc>>,
    pub tracked_entity: String,
}

/// A relationship between two people, rendered as a FHIR RelatedPerson.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationshipRecord {
    pub id: i64,
    pub uid: String,
    pub version: i32,
    pub last_updated: DateTime<Utc>,
    pub type_id: i64,
    pub from_id: i64,
    pub from_uid: String,
    pub to_id: i64,
    pub to_uid: String,
    /// The RelatedPerson is the `from` end; RelatedPerson.patient is the other.
    pub related_is_from: bool,
    /// The role code it was sent with.
    pub role: Option<crate::mapping::encounter::Coding>,
    pub deleted: bool,
}

impl RelationshipRecord {
    /// (the patient's tracked entity id, the related person's).
    pub fn ends(&self) -> (i64, i64) {
        if self.related_is_from {
            (self.to_id, self.from_id)
        } else {
            (self.from_id, self.to_id)
        }
    }
}

/// The change-log snapshot of a relationship version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelationshipSnapshot {
    pub relationship_type: String,
    pub from: String,
    pub to: String,
    pub related_is_from: bool,
    pub role_system: Option<String>,
    pub role_code: Option<String>,
    pub role_display: Option<String>,
}

/// An enrollment in a program, rendered as a FHIR EpisodeOfCare.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentRecord {
    pub id: i64,
    pub uid: String,
    pub version: i32,
    pub last_updated: DateTime<Utc>,
    pub tracked_entity_id: i64,
    pub tracked_entity_uid: String,
    pub program_id: i64,
    /// Where the person was enrolled.
    pub org_unit_id: i64,
    /// Who owns the person's record in the program now (after transfers); the enrolling org unit
    /// when no ownership row exists.
    pub owner_org_unit_id: i64,
    pub status: String,
    pub enrolled_at: DateTime<Utc>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub deleted: bool,
    /// Set on the version a transfer wrote: who moved the ownership, from where, and why.
    pub transfer: Option<TransferNote>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferNote {
    pub from: Option<String>,
    pub to: String,
    pub by: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// The change-log snapshot of an enrollment version (UIDs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentSnapshot {
    pub program: String,
    pub org_unit: String,
    pub owner: String,
    pub status: String,
    pub enrolled_at: DateTime<Utc>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferNote>,
}
