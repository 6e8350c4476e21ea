//! What an import did: read, stored (created/updated by type), skipped (by reason), rejected.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub created: usize,
    pub updated: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rejection {
    pub origin: String,
    pub entry: Option<usize>,
    pub resource_type: String,
    pub reason: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    /// Resources read (Bundle entries and NDJSON lines).
    pub read: usize,
    pub stored: BTreeMap<String, Counts>,
    /// Why resources were not stored although nothing was wrong with them (type not held, code
    /// not mapped, used only to resolve references...), with how many.
    pub skipped: BTreeMap<String, usize>,
    pub rejected: Vec<Rejection>,
    pub interrupted: bool,
}

impl Report {
    pub fn created(&mut self, t: &str) {
        self.stored.entry(t.to_string()).or_default().created += 1;
    }

    pub fn updated(&mut self, t: &str) {
        self.stored.entry(t.to_string()).or_default().updated += 1;
    }

    pub fn skip(&mut self, reason: impl Into<String>) {
        *self.skipped.entry(reason.into()).or_default() += 1;
    }

    pub fn reject(
        &mut self,
        origin: &str,
        entry: Option<usize>,
        resource_type: &str,
        reason: String,
    ) {
        self.rejected.push(Rejection {
            origin: origin.to_string(),
            entry,
            resource_type: resource_type.to_string(),
            reason,
        });
    }

    pub fn merge(&mut self, other: Report) {
        self.read += other.read;
        for (t, c) in other.stored {
            let e = self.stored.entry(t).or_default();
            e.created += c.created;
            e.updated += c.updated;
        }
        for (r, n) in other.skipped {
            *self.skipped.entry(r).or_default() += n;
        }
        self.rejected.extend(other.rejected);
        self.interrupted |= other.interrupted;
    }

    pub fn stored_total(&self) -> usize {
        self.stored.values().map(|c| c.created + c.updated).sum()
    }

    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }

    /// The summary printed at the end, with the first `show` rejections.
    pub fn summary(&self, show: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "read {} resources: stored {}, skipped {}, rejected {}{}",
            self.read,
            self.stored_total(),
            self.skipped_total(),
            self.rejected.len(),
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        for (t, c) in &self.stored {
            let _ = writeln!(
                s,
                "  stored {t}: {} created, {} updated",
                c.created, c.updated
            );
        }
        let mut skipped: Vec<(&String, &usize)> = self.skipped.iter().collect();
        skipped.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (reason, n) in skipped {
            let _ = writeln!(s, "  skipped {n}: {reason}");
        }
        for r in self.rejected.iter().take(show) {
            let at = r.entry.map(|e| format!(" entry[{e}]")).unwrap_or_default();
            let _ = writeln!(
                s,
                "  rejected {}{at} ({}): {}",
                r.origin, r.resource_type, r.reason
            );
        }
        if self.rejected.len() > show {
            let _ = writeln!(
                s,
                "  … and {} more rejections (all in the report file)",
                self.rejected.len() - show
            );
        }
        s
    }
}
