//! Access records of requests that wrote nothing, written in batches by one background thread:
//! a read costs the caller no extra round trip or commit, and the table one multi-row insert per
//! batch. A batch goes at least every [`INTERVAL`]; [`Sink::flush`] writes what is waiting now
//! (before the trail is searched, and at shutdown).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use crate::store::audit::{self, NewAuditRow};
use crate::store::PgPool;

/// How long a row may wait before its batch is written.
pub const INTERVAL: Duration = Duration::from_millis(200);
/// Rows that make a batch go at once.
const BATCH: usize = 500;
/// Rows kept while the database refuses them; beyond this the oldest are given up, loudly.
const BACKLOG: usize = 200_000;
/// Rows waiting in the channel for the writer; beyond this new rows are given up, loudly (a
/// writer stuck on a database outage must not take the gateway's memory with it).
const QUEUE: usize = 100_000;

enum Msg {
    Row(Box<NewAuditRow>),
    Flush(Sender<()>),
}

pub struct Sink {
    tx: SyncSender<Msg>,
}

impl Sink {
    /// Starts the writer thread on `pool`.
    pub fn start(pool: PgPool) -> std::io::Result<Sink> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("kiunga-audit".into())
            .spawn(move || run(pool, rx))?;
        Ok(Sink { tx })
    }

    pub fn record(&self, row: NewAuditRow) {
        match self.tx.try_send(Msg::Row(Box::new(row))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::error!(target: "kiunga::audit", lost = 1, "the audit writer is {QUEUE} rows behind; an access record was given up");
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!(target: "kiunga::audit", "the audit writer has stopped; an access record was not kept");
            }
        }
    }

    /// Writes every row recorded so far; returns once they are committed (or the writer gave up
    /// on this attempt, which it logs).
    pub fn flush(&self) {
        let (done, wait): (Sender<()>, _) = mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(30));
        }
    }
}

fn run(pool: PgPool, rx: Receiver<Msg>) {
    let mut rows: Vec<NewAuditRow> = Vec::new();
    let mut waiting: Vec<Sender<()>> = Vec::new();
    let mut oldest: Option<Instant> = None;
    loop {
        let timeout = match oldest {
            Some(t) => INTERVAL.saturating_sub(t.elapsed()),
            None => Duration::from_secs(3600),
        };
        let stopping = match rx.recv_timeout(timeout) {
            Ok(Msg::Row(r)) => {
                rows.push(*r);
                oldest.get_or_insert_with(Instant::now);
                false
            }
            Ok(Msg::Flush(done)) => {
                waiting.push(done);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let due = oldest.is_some_and(|t| t.elapsed() >= INTERVAL);
        if !rows.is_empty() && (due || rows.len() >= BATCH || !waiting.is_empty() || stopping) {
            match pool
                .get()
                .map_err(crate::error::Error::from)
                .and_then(|mut c| write(&mut c, &mut rows))
            {
                Ok(()) => {
                    oldest = None;
                }
                Err(e) => {
                    // Kept for the next batch; the error's kind only (rows are patient data).
                    tracing::error!(target: "kiunga::audit", status = e.status().as_u16(), waiting = rows.len(), "access records could not be written; retrying");
                    oldest = Some(Instant::now());
                    if rows.len() > BACKLOG {
                        let lost = rows.len() - BACKLOG;
                        rows.drain(..lost);
                        tracing::error!(target: "kiunga::audit", lost, "access records given up: the database refused them for too long");
                    }
                }
            }
        }
        for w in waiting.drain(..) {
            let _ = w.send(());
        }
        if stopping {
            return;
        }
    }
}

/// Writes `rows` in one transaction and empties it. When the batch is refused, each row is tried
/// alone, so that one row the database will never take (it should not happen: rows are cleaned
/// of what Postgres refuses) cannot hold back the others; such a row is given up, loudly. An
/// error of the connection itself leaves the rows for the next attempt.
fn write(
    conn: &mut diesel::PgConnection,
    rows: &mut Vec<NewAuditRow>,
) -> Result<(), crate::error::Error> {
    use diesel::Connection;
    if conn.transaction(|c| audit::insert(c, rows)).is_ok() {
        rows.clear();
        return Ok(());
    }
    let mut lost = 0;
    for row in std::mem::take(rows) {
        if let Err(e) = audit::insert(conn, std::slice::from_ref(&row)) {
            if matches!(
                e,
                crate::error::Error::Database(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::ClosedConnection,
                    _
                ))
            ) {
                rows.push(row);
                continue;
            }
            lost += 1;
        }
    }
    if lost > 0 {
        tracing::error!(target: "kiunga::audit", lost, "access records the database refused were given up");
    }
    if rows.is_empty() {
        Ok(())
    } else {
        Err(crate::error::Error::Unavailable(
            "the database connection closed".into(),
        ))
    }
}
