//! Faults a double can be told to inject, shared by every double.
//!
//! Faults apply to writes (POST/PUT/DELETE of data) only; reads and look-ups always answer, so a
//! client's recovery path (search before resending) can be exercised while writes fail.

use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
struct State {
    /// Answer this status (without committing) to the next `fail_left` writes.
    fail_status: u16,
    fail_left: u32,
    /// `Retry-After` seconds sent with an injected 429/503.
    retry_after: Option<u32>,
    /// Commit the next `hang_left` writes, then hold the answer for `hang_for` (longer than the
    /// client's timeout): the client sees a timeout although the record exists.
    hang_left: u32,
    hang_for: Duration,
    /// Added before every answer (reads and writes).
    latency: Duration,
}

/// What a write should do, decided once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Proceed normally.
    Proceed,
    /// Do not commit; answer this status (with `Retry-After` when given).
    Fail {
        status: u16,
        retry_after: Option<u32>,
    },
    /// Commit, then sleep this long before answering.
    CommitThenHang(Duration),
}

#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<State>>);

impl Faults {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// The next `n` writes answer `status` (500, 503, 429…) and commit nothing.
    pub fn fail_next(&self, n: u32, status: u16) {
        self.with(|s| {
            s.fail_left = n;
            s.fail_status = status;
            s.retry_after = None;
        })
    }

    /// As [`Faults::fail_next`], with a `Retry-After` header in seconds.
    pub fn fail_next_retry_after(&self, n: u32, status: u16, seconds: u32) {
        self.with(|s| {
            s.fail_left = n;
            s.fail_status = status;
            s.retry_after = Some(seconds);
        })
    }

    /// The next `n` writes are committed, then answered only after `hold` (set it above the
    /// client's timeout).
    pub fn commit_then_hang(&self, n: u32, hold: Duration) {
        self.with(|s| {
            s.hang_left = n;
            s.hang_for = hold;
        })
    }

    /// Every answer waits this long first.
    pub fn set_latency(&self, d: Duration) {
        self.with(|s| s.latency = d)
    }

    pub fn latency(&self) -> Duration {
        self.with(|s| s.latency)
    }

    /// Clears every fault.
    pub fn clear(&self) {
        self.with(|s| *s = State::default())
    }

    /// Consumes one injected fault for a write, if any is pending.
    pub fn decide_write(&self) -> Decision {
        self.with(|s| {
            if s.fail_left > 0 {
                s.fail_left -= 1;
                return Decision::Fail {
                    status: s.fail_status,
                    retry_after: s.retry_after,
                };
            }
            if s.hang_left > 0 {
                s.hang_left -= 1;
                return Decision::CommitThenHang(s.hang_for);
            }
            Decision::Proceed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_consumed_in_order_then_writes_proceed() {
        let f = Faults::default();
        f.fail_next(2, 503);
        f.commit_then_hang(1, Duration::from_secs(3));
        let fail = Decision::Fail {
            status: 503,
            retry_after: None,
        };
        assert_eq!(f.decide_write(), fail);
        assert_eq!(f.decide_write(), fail);
        assert_eq!(
            f.decide_write(),
            Decision::CommitThenHang(Duration::from_secs(3))
        );
        assert_eq!(f.decide_write(), Decision::Proceed);
    }
}
