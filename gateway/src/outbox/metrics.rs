//! Prometheus metrics of outbound delivery, per target: attempts by result and kind, latency,
//! and (read from the database at scrape time) queue depth and the age of the oldest item.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use super::Outcome;
use crate::store::outbox::StatusRow;

/// Upper bounds (seconds) of the latency histogram.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Default)]
struct PerTarget {
    /// (result, kind) → attempts.
    attempts: BTreeMap<(&'static str, &'static str), u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
pub struct Metrics(Mutex<BTreeMap<String, PerTarget>>);

impl Metrics {
    pub fn observe(&self, target: &str, outcome: &Outcome, took: Duration) {
        let (result, kind) = match outcome {
            Outcome::Delivered { .. } => ("delivered", "ok"),
            Outcome::Retry { kind, .. } => ("retry", *kind),
            Outcome::Rejected { kind, .. } => ("dead", *kind),
            Outcome::Unknown { .. } => ("unknown", "unknown-outcome"),
            Outcome::Skipped { .. } => ("skipped", "nothing-to-send"),
        };
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let t = all.entry(target.to_string()).or_default();
        *t.attempts.entry((result, kind)).or_default() += 1;
        let secs = took.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                t.buckets[i] += 1;
            }
        }
        t.count += 1;
        t.sum += secs;
    }

    /// The exposition text, with the backlog read from the outbox table.
    pub fn render(&self, status: &[StatusRow]) -> String {
        let mut out = String::new();
        out.push_str("# HELP kiunga_outbox_items Outbox items per target and status.\n");
        out.push_str("# TYPE kiunga_outbox_items gauge\n");
        for r in status {
            let _ = writeln!(
                out,
                "kiunga_outbox_items{{target=\"{}\",status=\"{}\"}} {}",
                r.target, r.status, r.items
            );
        }
        out.push_str(
            "# HELP kiunga_outbox_oldest_pending_seconds Age of the oldest pending item per target.\n",
        );
        out.push_str("# TYPE kiunga_outbox_oldest_pending_seconds gauge\n");
        for r in status.iter().filter(|r| r.status == "pending") {
            let _ = writeln!(
                out,
                "kiunga_outbox_oldest_pending_seconds{{target=\"{}\"}} {:.3}",
                r.target,
                r.oldest_seconds.unwrap_or(0.0)
            );
        }
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP kiunga_outbox_attempts_total Delivery attempts by this process, per target, result and kind.\n");
        out.push_str("# TYPE kiunga_outbox_attempts_total counter\n");
        for (target, t) in all.iter() {
            for ((result, kind), n) in &t.attempts {
                let _ = writeln!(
                    out,
                    "kiunga_outbox_attempts_total{{target=\"{target}\",result=\"{result}\",kind=\"{kind}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP kiunga_outbox_attempt_seconds Time one delivery attempt took.\n");
        out.push_str("# TYPE kiunga_outbox_attempt_seconds histogram\n");
        for (target, t) in all.iter() {
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "kiunga_outbox_attempt_seconds_bucket{{target=\"{target}\",le=\"{le}\"}} {}",
                    t.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "kiunga_outbox_attempt_seconds_bucket{{target=\"{target}\",le=\"+Inf\"}} {}",
                t.count
            );
            let _ = writeln!(
                out,
                "kiunga_outbox_attempt_seconds_sum{{target=\"{target}\"}} {:.6}",
                t.sum
            );
            let _ = writeln!(
                out,
                "kiunga_outbox_attempt_seconds_count{{target=\"{target}\"}} {}",
                t.count
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_and_latency_are_counted_per_target() {
        let m = Metrics::default();
        m.observe(
            "openmrs",
            &Outcome::Delivered { remote_id: None },
            Duration::from_millis(20),
        );
        m.observe(
            "openmrs",
            &Outcome::retry("timeout", "x"),
            Duration::from_millis(2000),
        );
        let text = m.render(&[StatusRow {
            target: "openmrs".into(),
            status: "pending".into(),
            items: 3,
            oldest_seconds: Some(12.5),
        }]);
        assert!(text.contains("kiunga_outbox_items{target=\"openmrs\",status=\"pending\"} 3"));
        assert!(text.contains("kiunga_outbox_oldest_pending_seconds{target=\"openmrs\"} 12.500"));
        assert!(text.contains(
            "kiunga_outbox_attempts_total{target=\"openmrs\",result=\"retry\",kind=\"timeout\"} 1"
        ));
        assert!(text
            .contains("kiunga_outbox_attempt_seconds_bucket{target=\"openmrs\",le=\"0.025\"} 1"));
        assert!(text.contains("kiunga_outbox_attempt_seconds_count{target=\"openmrs\"} 2"));
    }
}
