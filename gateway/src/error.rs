//! The one error type of the gateway and the one place it becomes an OperationOutcome
//! ([`Error::client_outcome`]). 5xx details are logged with the request id and never echoed.

use actix_web::http::StatusCode;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use kiunga_codec::{CodecError, ErrorKind as CodecKind};
use serde_json::Value;

use crate::fhir::outcome::{Issue, OperationOutcome};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is malformed (bad JSON, wrong resourceType, bad parameter): 400.
    #[error("{message}")]
    Invalid {
        message: String,
        expression: Option<String>,
    },
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// No valid credentials (no bearer token, or an unknown, expired or revoked one): 401.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this (a write outside its capture scope): 403.
    #[error("{0}")]
    Forbidden(String),
    /// An identifier system (assigning authority) this registry does not know, named where a
    /// known one is required: 400 for a source domain, 403 for a target domain (IHE PIXm).
    #[error("{message}")]
    UnknownSystem { message: String, target: bool },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    PreconditionFailed(String),
    /// The request conflicts with the current state (a unique value already used, a version race): 409.
    #[error("{message}")]
    Conflict {
        message: String,
        expression: Option<String>,
    },
    /// Understood but breaks a business rule or cannot be mapped: 422, with one issue per problem.
    #[error("{}", .0.first().map(|i| i.diagnostics.as_str()).unwrap_or("unprocessable"))]
    Unprocessable(Vec<Issue>),
    #[error("request body larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 413 with a specific explanation.
    #[error("{0}")]
    TooLarge(String),
    /// The caller is over its rate limit: 429 (with `Retry-After`).
    #[error("{0}")]
    TooManyRequests(String),
    /// Temporarily unable to serve (pool exhausted, database down): 503.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("database error: {0}")]
    Database(#[from] DieselError),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid {
            message: message.into(),
            expression: None,
        }
    }

    pub fn invalid_at(message: impl Into<String>, expression: impl Into<String>) -> Self {
        Error::Invalid {
            message: message.into(),
            expression: Some(expression.into()),
        }
    }

    pub fn rule(message: impl Into<String>, expression: Option<String>) -> Self {
        Error::Unprocessable(vec![Issue::error("business-rule", message, expression)])
    }

    /// Replaces a size error's message with a more specific one.
    pub fn with_message(self, message: String) -> Self {
        match self {
            Error::PayloadTooLarge(_) => Error::TooLarge(message),
            other => other,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Invalid { .. } | Error::Codec(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::UnknownSystem { target: false, .. } => StatusCode::BAD_REQUEST,
            Error::UnknownSystem { target: true, .. } => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Gone(_) => StatusCode::GONE,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::PayloadTooLarge(_) | Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Database(e) => match db_kind(e) {
                Some(DatabaseErrorKind::UniqueViolation) => StatusCode::CONFLICT,
                Some(DatabaseErrorKind::SerializationFailure) => StatusCode::SERVICE_UNAVAILABLE,
                Some(
                    DatabaseErrorKind::ForeignKeyViolation | DatabaseErrorKind::CheckViolation,
                ) => StatusCode::UNPROCESSABLE_ENTITY,
                Some(DatabaseErrorKind::ClosedConnection) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The status and OperationOutcome a client sees. This is the only place an error becomes an
    /// OperationOutcome. Server-side failures are logged here (without PHI: database error details
    /// can quote values, so only the error kind and constraint are logged) and answered generically.
    pub fn client_outcome(&self, request_id: &str) -> (StatusCode, Value) {
        let status = self.status();
        let issue = match self {
            Error::Invalid { message, expression } => Issue::error("invalid", message, expression.clone()),
            Error::Codec(e) => {
                let code = match e.kind {
                    CodecKind::Syntax | CodecKind::Structure => "structure",
                    CodecKind::Primitive => "value",
                };
                Issue::error(code, &e.message, e.expression.clone())
            }
            Error::Unauthorized(m) => Issue::error("login", m, None),
            Error::Forbidden(m) => Issue::error("forbidden", m, None),
            Error::UnknownSystem { message, .. } => Issue::error("code-invalid", message, None),
            Error::NotFound(m) => Issue::error("not-found", m, None),
            Error::Gone(m) => Issue::error("deleted", m, None),
            Error::MethodNotAllowed(m) => Issue::error("not-supported", m, None),
            Error::UnsupportedMediaType(m) | Error::NotAcceptable(m) => Issue::error("not-supported", m, None),
            Error::PreconditionFailed(m) => Issue::error("conflict", m, None),
            Error::Conflict { message, expression } => Issue::error("conflict", message, expression.clone()),
            Error::Unprocessable(issues) => return (status, OperationOutcome::new(issues.clone()).into_json()),
            Error::PayloadTooLarge(_) | Error::TooLarge(_) => Issue::error("too-costly", self.to_string(), None),
            Error::TooManyRequests(m) => Issue::error("throttled", m, None),
            Error::Unavailable(m) => {
                tracing::warn!(request_id, reason = %m, "service unavailable");
                Issue::error("transient", format!("{m}; retry later (request id {request_id})"), None)
            }
            Error::Internal(m) => {
                tracing::error!(request_id, error = %m, "internal error");
                Issue::error("exception", internal_message(request_id), None)
            }
            Error::Database(e) => match db_kind(e) {
                Some(DatabaseErrorKind::UniqueViolation) => Issue::error(
                    "duplicate",
                    "the request conflicts with a record that already exists (a unique value is already used)",
                    None,
                ),
                Some(DatabaseErrorKind::SerializationFailure) | Some(DatabaseErrorKind::ClosedConnection) => {
                    tracing::warn!(request_id, kind = ?db_kind(e), "transient database failure");
                    Issue::error("transient", format!("the database could not complete the request; retry (request id {request_id})"), None)
                }
                Some(DatabaseErrorKind::ForeignKeyViolation | DatabaseErrorKind::CheckViolation) => {
                    let constraint = db_constraint(e);
                    tracing::warn!(request_id, constraint, "constraint violation reached the database");
                    Issue::error("business-rule", format!("the request breaks a rule of the registry ({constraint})"), None)
                }
                _ => {
                    tracing::error!(request_id, kind = ?db_kind(e), constraint = db_constraint(e), "database error");
                    Issue::error("exception", internal_message(request_id), None)
                }
            },
        };
        (status, OperationOutcome::new(vec![issue]).into_json())
    }
}

fn internal_message(request_id: &str) -> String {
    format!("the server failed to process the request; the operators can find it under request id {request_id}")
}

fn db_kind(e: &DieselError) -> Option<DatabaseErrorKind> {
    match e {
        DieselError::DatabaseError(kind, _) => Some(match kind {
            DatabaseErrorKind::UniqueViolation => DatabaseErrorKind::UniqueViolation,
            DatabaseErrorKind::ForeignKeyViolation => DatabaseErrorKind::ForeignKeyViolation,
            DatabaseErrorKind::CheckViolation => DatabaseErrorKind::CheckViolation,
            DatabaseErrorKind::SerializationFailure => DatabaseErrorKind::SerializationFailure,
            DatabaseErrorKind::ClosedConnection => DatabaseErrorKind::ClosedConnection,
            DatabaseErrorKind::NotNullViolation => DatabaseErrorKind::NotNullViolation,
            DatabaseErrorKind::ReadOnlyTransaction => DatabaseErrorKind::ReadOnlyTransaction,
            _ => DatabaseErrorKind::Unknown,
        }),
        _ => None,
    }
}

fn db_constraint(e: &DieselError) -> &str {
    match e {
        DieselError::DatabaseError(_, info) => info.constraint_name().unwrap_or("unnamed"),
        _ => "none",
    }
}

impl From<r2d2_error::PoolError> for Error {
    fn from(e: r2d2_error::PoolError) -> Self {
        let _ = e;
        Error::Unavailable("no database connection is free: the server is at capacity".into())
    }
}

/// r2d2's error type, reached through diesel's re-export.
mod r2d2_error {
    pub type PoolError = diesel::r2d2::PoolError;
}

impl From<actix_web::error::BlockingError> for Error {
    fn from(_: actix_web::error::BlockingError) -> Self {
        Error::Unavailable("the server is shutting down".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_are_not_echoed() {
        let (status, body) =
            Error::Internal("secret detail about Amina".into()).client_outcome("req1");
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let text = body.to_string();
        assert!(!text.contains("Amina"), "{text}");
        assert!(text.contains("req1"), "{text}");
    }

    #[test]
    fn unprocessable_keeps_every_issue() {
        let e = Error::Unprocessable(vec![
            Issue::error("business-rule", "one", Some("Patient.a".into())),
            Issue::error("business-rule", "two", None),
        ]);
        let (status, body) = e.client_outcome("r");
        assert_eq!(status.as_u16(), 422);
        assert_eq!(
            body["issue"].as_array().expect("test input is valid").len(),
            2
        );
        assert_eq!(body["issue"][0]["expression"][0], "Patient.a");
    }
}
