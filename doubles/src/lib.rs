//! Test doubles of the systems Kiunga pushes to, served over real HTTP on 127.0.0.1.
//!
//! Each double follows its contract in `../shared/contracts/` strictly, including the quirks a
//! careless client trips over (silent drops, 500s that are rejections, no idempotency), and can
//! be told to fail ([`faults::Faults`]): refuse connections, answer 5xx, answer slowly, or commit
//! a write and then never answer. Tests start them in-process; `kiunga-double` starts one as a
//! process (for `make bench-outbound` and for trying the push by hand).

pub mod faults;
pub mod opencrvs;
pub mod openmrs;
pub mod server;
