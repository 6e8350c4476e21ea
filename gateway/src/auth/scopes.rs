//! SMART on FHIR scopes (v2 `system/Patient.cruds`, `system/*.rs`; v1 `system/Patient.read`,
//! `.write`, `.*` read as their v2 equivalents): which interactions a client may use on which
//! resource type. Patient-level and user-level scopes are not granted: the gateway's callers are
//! systems (SMART Backend Services).

use std::fmt;

/// One SMART permission letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Op {
    pub fn letter(self) -> char {
        match self {
            Op::Create => 'c',
            Op::Read => 'r',
            Op::Update => 'u',
            Op::Delete => 'd',
            Op::Search => 's',
        }
    }

    fn index(self) -> usize {
        match self {
            Op::Create => 0,
            Op::Read => 1,
            Op::Update => 2,
            Op::Delete => 3,
            Op::Search => 4,
        }
    }
}

/// What a wildcard scope does not reach: the audit trail and the outbox are granted by name.
const BY_NAME_ONLY: &[&str] = &["AuditEvent", "Outbox"];

const ALL_OPS: [Op; 5] = [Op::Create, Op::Read, Op::Update, Op::Delete, Op::Search];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    /// None: every resource type (`*`).
    resource: Option<String>,
    ops: [bool; 5],
}

impl Scope {
    fn covers(&self, resource: &str, op: Op) -> bool {
        // The audit trail is granted by name only: `system/*.rs` does not reach it.
        self.ops[op.index()]
            && match self.resource.as_deref() {
                Some(r) => r == resource,
                None => !BY_NAME_ONLY.contains(&resource),
            }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letters: String = ALL_OPS
            .iter()
            .filter(|o| self.ops[o.index()])
            .map(|o| o.letter())
            .collect();
        write!(
            f,
            "system/{}.{letters}",
            self.resource.as_deref().unwrap_or("*")
        )
    }
}

/// A set of scopes: what a client was registered with, or what a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes {
    scopes: Vec<Scope>,
    /// Unrestricted: authentication is off, or the gateway itself is asking.
    all: bool,
}

impl Scopes {
    pub fn all() -> Scopes {
        Scopes {
            scopes: Vec::new(),
            all: true,
        }
    }

    /// Parses a space-separated scope string. Every scope must be a `system/` scope on a
    /// resource type name or `*` with v2 letters (in `cruds` order) or a v1 `read`/`write`/`*`.
    pub fn parse(text: &str) -> Result<Scopes, String> {
        let mut scopes = Vec::new();
        for s in text.split_whitespace() {
            let Some(rest) = s.strip_prefix("system/") else {
                return Err(format!(
                    "scope `{s}`: only system scopes are granted (`system/Patient.rs`); patient/ and user/ scopes need a user, and this gateway serves systems"
                ));
            };
            let Some((resource, perms)) = rest.split_once('.') else {
                return Err(format!(
                    "scope `{s}`: expected system/<ResourceType or *>.<cruds>"
                ));
            };
            // v2 letters may carry a query (`?category=...`): not supported, refused rather
            // than widened.
            if perms.contains('?') {
                return Err(format!(
                    "scope `{s}`: scopes narrowed by a search query are not supported"
                ));
            }
            let valid_type = resource == "*"
                || (resource
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase())
                    && resource.chars().all(|c| c.is_ascii_alphanumeric()));
            if !valid_type {
                return Err(format!("scope `{s}`: `{resource}` is not a resource type"));
            }
            let mut ops = [false; 5];
            match perms {
                "read" => {
                    ops[Op::Read.index()] = true;
                    ops[Op::Search.index()] = true;
                }
                "write" => {
                    ops[Op::Create.index()] = true;
                    ops[Op::Update.index()] = true;
                    ops[Op::Delete.index()] = true;
                }
                "*" => ops = [true; 5],
                letters => {
                    // v2: a subsequence of `cruds`, in that order.
                    let mut at = 0;
                    for ch in letters.chars() {
                        let Some(pos) = ALL_OPS[at..].iter().position(|o| o.letter() == ch) else {
                            return Err(format!(
                                "scope `{s}`: permissions must be letters of `cruds` in that order"
                            ));
                        };
                        at += pos;
                        ops[at] = true;
                        at += 1;
                    }
                    if letters.is_empty() {
                        return Err(format!("scope `{s}`: no permission letters"));
                    }
                }
            }
            scopes.push(Scope {
                resource: (resource != "*").then(|| resource.to_owned()),
                ops,
            });
        }
        Ok(Scopes { scopes, all: false })
    }

    pub fn allows(&self, resource: &str, op: Op) -> bool {
        self.all || self.scopes.iter().any(|s| s.covers(resource, op))
    }

    /// What a token request for `requested` is granted out of these (the client's registered
    /// scopes): every requested scope must be covered in full, or the request is refused with the
    /// first one that is not. Nothing requested: everything registered.
    pub fn grant(&self, requested: &Scopes) -> Result<Scopes, String> {
        if requested.scopes.is_empty() {
            return Ok(self.clone());
        }
        for r in &requested.scopes {
            let covered = ALL_OPS.iter().filter(|o| r.ops[o.index()]).all(|o| {
                self.all
                    || self.scopes.iter().any(|mine| {
                        // A wildcard does not reach the audit trail: only a scope naming
                        // AuditEvent does (`covers`).
                        mine.ops[o.index()]
                            && match (&mine.resource, &r.resource) {
                                (None, Some(t)) => !BY_NAME_ONLY.contains(&t.as_str()),
                                (None, None) => true,
                                (Some(m), want) => Some(m) == want.as_ref(),
                            }
                    })
            });
            if !covered {
                return Err(format!("scope `{r}` is not registered for this client"));
            }
        }
        Ok(requested.clone())
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all {
            return f.write_str("system/*.cruds");
        }
        let parts: Vec<String> = self.scopes.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(text: &str) -> Scopes {
        Scopes::parse(text).expect("a valid scope string")
    }

    #[test]
    fn v2_and_v1_scopes_allow_what_they_say() {
        let s = scopes("system/Patient.rs system/Observation.cruds system/*.r");
        assert!(s.allows("Patient", Op::Search));
        assert!(!s.allows("Patient", Op::Create));
        assert!(s.allows("Observation", Op::Delete));
        assert!(s.allows("Encounter", Op::Read));
        assert!(!s.allows("Encounter", Op::Search));
        let v1 = scopes("system/Patient.read system/Encounter.write");
        assert!(v1.allows("Patient", Op::Search) && !v1.allows("Patient", Op::Update));
        assert!(v1.allows("Encounter", Op::Update) && !v1.allows("Encounter", Op::Read));
        assert_eq!(
            scopes("system/Patient.*").to_string(),
            "system/Patient.cruds"
        );
    }

    #[test]
    fn the_audit_trail_is_reached_by_name_only() {
        let wide = scopes("system/*.rs");
        assert!(!wide.allows("AuditEvent", Op::Search));
        // Nor can a token ask for it out of a wildcard registration.
        assert!(wide.grant(&scopes("system/AuditEvent.rs")).is_err());
        let auditor = scopes("system/*.rs system/AuditEvent.rs");
        let granted = auditor
            .grant(&scopes("system/AuditEvent.rs"))
            .expect("registered by name");
        assert!(granted.allows("AuditEvent", Op::Search));
        assert!(wide.grant(&scopes("system/Patient.rs")).is_ok());
    }

    #[test]
    fn malformed_and_user_scopes_are_refused_with_a_reason() {
        for bad in [
            "patient/Patient.rs",
            "user/*.r",
            "system/Patient.rc",
            "system/Patient.x",
            "system/patient.r",
            "system/Patient",
            "system/Observation.rs?category=laboratory",
        ] {
            let e = Scopes::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn a_grant_never_exceeds_the_registration() {
        let registered = scopes("system/Patient.rs system/*.r");
        let want = scopes("system/Patient.r system/Encounter.r");
        assert_eq!(registered.grant(&want), Ok(want));
        assert!(registered
            .grant(&scopes("system/Patient.c"))
            .unwrap_err()
            .contains("system/Patient.c"));
        assert!(registered.grant(&scopes("system/*.rs")).is_err());
        assert_eq!(registered.grant(&Scopes::default()), Ok(registered.clone()));
    }
}
