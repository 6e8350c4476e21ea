//! Kiunga: a FHIR R4 gateway over a DHIS2-Tracker-style registry stored in Postgres.
//!
//! Requests flow one way: `http` (thin actix handlers) → `fhir` (parse, validate, negotiate,
//! OperationOutcome) → `translate` (mapping-driven, pure) → `tracker` (rules, scope) → `store`
//! (diesel, one transaction per request). See docs/architecture.md.

pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod context;
pub mod error;
pub mod fhir;
pub mod http;
pub mod import;
pub mod mapping;
pub mod matching;
pub mod outbox;
pub mod rest;
pub mod store;
pub mod telemetry;
pub mod terminology;
pub mod tracker;
pub mod translate;

pub use app::{AppState, Gateway};
pub use config::Config;
pub use error::Error;
