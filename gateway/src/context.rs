//! Who is asking and what they may see. Every data access takes a [`RequestContext`]; the store's
//! scoped queries ([`crate::store::Scoped`]) are the one place its org-unit scope turns into SQL.

use std::fmt;

use crate::auth::scopes::{Op, Scopes};
use crate::error::Error;

/// The caller: an API client authenticated at `/auth/token` (docs/security.md), the anonymous
/// caller of development mode (`KIUNGA_AUTH=off`, the whole tree in scope), or the gateway itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Anonymous,
    Client(String),
    User(String),
    /// The gateway itself (start-up loads, command-line tools).
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Anonymous => f.write_str("anonymous"),
            Actor::Client(id) => write!(f, "client:{id}"),
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// A set of org-unit subtrees, as materialised paths (`/root/district`). `All` is the whole tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgScope {
    All,
    Subtrees(Vec<String>),
}

impl OrgScope {
    pub fn contains(&self, path: &str) -> bool {
        match self {
            OrgScope::All => true,
            OrgScope::Subtrees(roots) => roots.iter().any(|r| within(path, r)),
        }
    }

    /// The subtree roots and their `LIKE` patterns (`/root/district/%`) for SQL, or None when the
    /// scope is unrestricted. A path is in scope when it equals a root or matches a pattern.
    pub fn sql_filter(&self) -> Option<(Vec<String>, Vec<String>)> {
        match self {
            OrgScope::All => None,
            OrgScope::Subtrees(roots) => Some((
                roots.clone(),
                roots
                    .iter()
                    .map(|r| format!("{}/%", escape_like(r)))
                    .collect(),
            )),
        }
    }
}

fn within(path: &str, root: &str) -> bool {
    path == root || (path.starts_with(root) && path.as_bytes().get(root.len()) == Some(&b'/'))
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub actor: Actor,
    /// Org units whose records the caller may create and change (DHIS2 "capture" scope).
    pub capture: OrgScope,
    /// Org units whose records the caller may find and read (DHIS2 "search" scope).
    pub search: OrgScope,
    /// The SMART scopes granted: which interactions on which resource types.
    pub scopes: Scopes,
    /// The request's access to patient data, which its AuditEvent records (`crate::audit`); None
    /// for the gateway's own work and for requests that touch no patient data.
    pub access: Option<std::sync::Arc<crate::audit::Access>>,
    /// The scope for program data as ids, resolved from the loaded metadata before the request's
    /// unit of work starts (`crate::app`), so that no query is spent on it; None: not resolved
    /// (the unit of work then reads it from the database).
    pub program_scope: Option<Option<crate::store::ProgramScope>>,
    /// The programs (UIDs) whose data the caller may see and write, DHIS2's program access; None:
    /// every program.
    pub programs: Option<Vec<String>>,
}

impl RequestContext {
    pub fn anonymous(request_id: impl Into<String>) -> Self {
        RequestContext {
            request_id: request_id.into(),
            actor: Actor::Anonymous,
            capture: OrgScope::All,
            search: OrgScope::All,
            scopes: Scopes::all(),
            access: None,
            program_scope: None,
            programs: None,
        }
    }

    /// A request with no caller established: no scopes, no org units. Fails closed.
    pub fn nobody(request_id: impl Into<String>) -> Self {
        RequestContext {
            request_id: request_id.into(),
            actor: Actor::Anonymous,
            capture: OrgScope::Subtrees(Vec::new()),
            search: OrgScope::Subtrees(Vec::new()),
            scopes: Scopes::default(),
            access: None,
            program_scope: None,
            programs: None,
        }
    }

    pub fn system() -> Self {
        RequestContext {
            request_id: "system".into(),
            actor: Actor::System,
            capture: OrgScope::All,
            search: OrgScope::All,
            scopes: Scopes::all(),
            access: None,
            program_scope: None,
            programs: None,
        }
    }

    /// The context of a request made with a bearer token.
    pub fn client(request_id: impl Into<String>, p: &crate::auth::Principal) -> Self {
        RequestContext {
            request_id: request_id.into(),
            actor: Actor::Client(p.client_id.clone()),
            capture: p.capture.clone(),
            search: p.search.clone(),
            scopes: p.scopes.clone(),
            access: None,
            program_scope: None,
            programs: p.programs.clone(),
        }
    }

    /// Refuses (403) an interaction the granted scopes do not allow, naming the scope it needs.
    pub fn require(&self, resource_type: &str, op: Op) -> Result<(), Error> {
        if self.scopes.allows(resource_type, op) {
            return Ok(());
        }
        let what = match op {
            Op::Create => "create",
            Op::Read => "read",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Search => "search",
        };
        Err(Error::Forbidden(format!(
            "the access token's scopes do not allow {what} on {resource_type}; it needs system/{resource_type}.{} (granted: {})",
            op.letter(),
            self.scopes
        )))
    }

    /// Whether the caller has access to the program with this UID.
    pub fn may_use_program(&self, uid: &str) -> bool {
        self.programs
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| p == uid))
    }

    /// Refuses (403) writing program data of a program the caller has no access to.
    pub fn require_program(&self, uid: &str, name: &str) -> Result<(), Error> {
        if self.may_use_program(uid) {
            return Ok(());
        }
        Err(Error::Forbidden(format!(
            "this client has no access to the program {name} ({uid}); its registration names the programs it may use"
        )))
    }

    /// Whether the caller may read resources of this type (included and `$everything` resources
    /// of other types are left out when not).
    pub fn may_read(&self, resource_type: &str) -> bool {
        self.scopes.allows(resource_type, Op::Read)
    }

    /// The same context with its program scope resolved from the metadata loaded at start-up (the
    /// org-unit tree and the programs' access levels do not change while the gateway runs).
    pub fn resolved(mut self, md: &crate::tracker::metadata::Metadata) -> Self {
        if self.program_scope.is_none() {
            self.program_scope = Some(crate::store::ProgramScope::resolve(&self, md));
        }
        self
    }

    /// The same context, recording its accesses as `access`.
    pub fn with_access(mut self, access: Option<std::sync::Arc<crate::audit::Access>>) -> Self {
        self.access = access;
        self
    }

    pub fn with_scope(mut self, capture: OrgScope, search: OrgScope) -> Self {
        self.capture = capture;
        self.search = search;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_scope_is_a_path_prefix_on_segment_boundaries() {
        let s = OrgScope::Subtrees(vec!["/A/B".into()]);
        assert!(s.contains("/A/B"));
        assert!(s.contains("/A/B/C"));
        assert!(!s.contains("/A/BC"));
        assert!(!s.contains("/A"));
        assert!(OrgScope::All.contains("/anything"));
    }

    #[test]
    fn a_context_without_a_caller_may_do_nothing() {
        let c = RequestContext::nobody("r");
        assert!(c.require("Patient", Op::Read).is_err());
        assert!(!c.may_read("Observation"));
        assert!(!c.search.contains("/A"));
        assert!(RequestContext::anonymous("r")
            .require("Patient", Op::Delete)
            .is_ok());
    }
}
