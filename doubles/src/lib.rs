//! Test doubles of the systems Kiunga pushes to (OpenMRS FHIR2, OpenCRVS, a generic FHIR R4
//! server as HAPI FHIR answers), served over real HTTP on 127.0.0.1.
//!
//! Each double follows its contract in `../shared/contracts/` strictly, including the quirks a
//! careless client trips over (silent drops, 500s that are rejections, no idempotency), and can
//! be told to fail ([`faults::Faults`]): refuse connections, answer 5xx, answer slowly, or commit
//! a write and then never answer. Tests and `make bench-outbound` start them in-process.

pub mod faults;
pub mod fhir;
pub mod opencrvs;
pub mod openmrs;
pub mod server;
