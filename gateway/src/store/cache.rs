//! What a unit of work created, kept so that later entries of the same transaction Bundle (an
//! Encounter naming the Patient created three entries earlier, an Observation naming that
//! Encounter) find it without a round trip.
//!
//! Only records created in this unit of work are held: they cannot have been changed by anyone
//! else (nobody sees them before commit), and a person created here has no enrollment but the ones
//! opened here. Updates and deletes evict what they touch and go to the database.

use std::collections::{HashMap, HashSet};

use crate::context::OrgScope;
use crate::tracker::model::{EventRecord, PersonRecord};

#[derive(Default)]
pub struct Cache {
    /// Each record with the org-unit path of its person, which search scope is checked against
    /// exactly as the SQL filter would.
    persons: HashMap<String, (PersonRecord, String)>,
    events: HashMap<String, (EventRecord, String)>,
    /// Active enrollment (id, uid) opened here, by (person id, program id).
    enrollments: HashMap<(i64, i64), (i64, String)>,
    new_enrollments: HashSet<i64>,
    new_persons: HashSet<i64>,
}

impl Cache {
    pub fn clear(&mut self) {
        *self = Cache::default();
    }

    pub fn add_person(&mut self, p: &PersonRecord, path: &str) {
        self.persons
            .insert(p.uid.clone(), (p.clone(), path.to_string()));
        self.new_persons.insert(p.id);
    }

    /// The person created here, if the caller may see it.
    pub fn person(&self, uid: &str, scope: &OrgScope) -> Option<&PersonRecord> {
        self.persons
            .get(uid)
            .filter(|(_, path)| scope.contains(path))
            .map(|(p, _)| p)
    }

    /// True when the person was created in this unit of work (so all its enrollments are known here).
    pub fn is_new_person(&self, id: i64) -> bool {
        self.new_persons.contains(&id)
    }

    pub fn evict_person(&mut self, uid: &str) {
        self.persons.remove(uid);
    }

    pub fn add_event(&mut self, e: &EventRecord, person_path: &str) {
        self.events
            .insert(e.uid.clone(), (e.clone(), person_path.to_string()));
    }

    /// The event created here, if the caller may see its person.
    pub fn event(&self, uid: &str, scope: &OrgScope) -> Option<&EventRecord> {
        self.events
            .get(uid)
            .filter(|(_, path)| scope.contains(path))
            .map(|(e, _)| e)
    }

    pub fn evict_event(&mut self, uid: &str) {
        self.events.remove(uid);
    }

    pub fn add_enrollment(&mut self, person: i64, program: i64, id: i64, uid: &str) {
        self.enrollments
            .insert((person, program), (id, uid.to_string()));
        self.new_enrollments.insert(id);
    }

    pub fn enrollment(&self, person: i64, program: i64) -> Option<&(i64, String)> {
        self.enrollments.get(&(person, program))
    }

    pub fn is_new_enrollment(&self, id: i64) -> bool {
        self.new_enrollments.contains(&id)
    }

    /// Live events of a stage in an enrollment opened here.
    pub fn events_in_stage(&self, enrollment_id: i64, stage_id: i64) -> Vec<String> {
        self.events
            .values()
            .filter(|(e, _)| {
                e.enrollment_id == enrollment_id && e.stage_id == stage_id && !e.deleted
            })
            .map(|(e, _)| e.uid.clone())
            .collect()
    }
}
