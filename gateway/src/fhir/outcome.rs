//! OperationOutcome and its issues.

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// One OperationOutcome.issue: `code` is from the FHIR IssueType value set.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub severity: Severity,
    pub code: &'static str,
    pub diagnostics: String,
    pub expression: Option<String>,
}

impl Issue {
    pub fn error(
        code: &'static str,
        diagnostics: impl Into<String>,
        expression: Option<String>,
    ) -> Self {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression,
        }
    }

    pub fn warning(
        code: &'static str,
        diagnostics: impl Into<String>,
        expression: Option<String>,
    ) -> Self {
        Issue {
            severity: Severity::Warning,
            code,
            diagnostics: diagnostics.into(),
            expression,
        }
    }

    pub fn information(diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Information,
            code: "informational",
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "severity": self.severity.as_str(),
            "code": self.code,
            "diagnostics": self.diagnostics,
        });
        if let Some(e) = &self.expression {
            v["expression"] = json!([e]);
        }
        v
    }
}

#[derive(Debug, Clone, Default)]
pub struct OperationOutcome {
    pub issues: Vec<Issue>,
}

impl OperationOutcome {
    pub fn new(issues: Vec<Issue>) -> Self {
        OperationOutcome { issues }
    }

    pub fn into_json(self) -> Value {
        let issues: Vec<Value> = if self.issues.is_empty() {
            vec![Issue::information("all OK").to_json()]
        } else {
            self.issues.iter().map(Issue::to_json).collect()
        };
        json!({ "resourceType": "OperationOutcome", "issue": issues })
    }
}
