//! The principals of recently seen access tokens, so that a request does not wait for a database
//! round trip to learn who is asking (which cost reads a third of their throughput).
//!
//! Revocation still takes effect at once: any change to a client or its tokens, by this process
//! or another (`kiunga clients`, the clients file, SQL), fires `NOTIFY kiunga_clients` from a
//! trigger (migration 14) when it commits, and a listener thread empties the cache on it within
//! [`POLL`]; a change made in this process empties it directly. Entries are used only while the
//! listener is known to be connected: when it is not, every request asks the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::{Connection, PgConnection, RunQueryDsl};

use super::Principal;

/// How often the listener looks for notifications.
pub const POLL: Duration = Duration::from_millis(20);
/// How long after its last successful look the listener still counts as connected.
const HEALTHY_FOR: Duration = Duration::from_millis(250);
/// Tokens kept at most; beyond, the cache starts again empty.
const CAPACITY: usize = 10_000;

/// Bumped by every change to clients or tokens in this process, and by the listener for changes
/// made elsewhere; an entry cached under an older generation is not used.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Something about clients or tokens changed: forget every cached principal.
pub fn changed() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

struct Entry {
    principal: Arc<Principal>,
    expires: DateTime<Utc>,
    generation: u64,
}

pub struct TokenCache {
    entries: Mutex<HashMap<Vec<u8>, Entry>>,
    /// Until when the listener counts as connected (None: not yet, or lost).
    healthy_until: Mutex<Option<Instant>>,
}

impl TokenCache {
    /// The cache and its listener thread on its own connection to `database_url`.
    pub fn start(database_url: String) -> std::io::Result<Arc<TokenCache>> {
        let cache = Arc::new(TokenCache {
            entries: Mutex::new(HashMap::new()),
            healthy_until: Mutex::new(None),
        });
        let weak = Arc::downgrade(&cache);
        std::thread::Builder::new()
            .name("kiunga-token-listener".into())
            .spawn(move || listen(&weak, &database_url))?;
        Ok(cache)
    }

    fn healthy(&self) -> bool {
        let until = match self.healthy_until.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        };
        until.is_some_and(|u| Instant::now() < u)
    }

    fn set_healthy(&self, until: Option<Instant>) {
        match self.healthy_until.lock() {
            Ok(mut g) => *g = until,
            Err(p) => *p.into_inner() = until,
        }
    }

    pub fn get(&self, hash: &[u8]) -> Option<Arc<Principal>> {
        if !self.healthy() {
            return None;
        }
        let generation = GENERATION.load(Ordering::Acquire);
        let entries = self.entries.lock().ok()?;
        let e = entries.get(hash)?;
        (e.generation == generation && Utc::now() < e.expires).then(|| e.principal.clone())
    }

    /// Keeps a principal read from the database under the generation seen *before* the read, so
    /// that a change committed during the read makes the entry unusable.
    pub fn put(
        &self,
        hash: Vec<u8>,
        principal: Arc<Principal>,
        expires: DateTime<Utc>,
        generation: u64,
    ) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            entries.insert(
                hash,
                Entry {
                    principal,
                    expires,
                    generation,
                },
            );
        }
    }

    /// The generation to pass to [`TokenCache::put`], read before the database is.
    pub fn generation(&self) -> u64 {
        GENERATION.load(Ordering::Acquire)
    }
}

/// Empties the cache on every notification, while the cache lives (the thread ends with it).
fn listen(cache: &std::sync::Weak<TokenCache>, database_url: &str) {
    while cache.strong_count() > 0 {
        let conn = PgConnection::establish(&crate::store::libpq_url(database_url))
            .ok()
            .and_then(|mut conn| {
                diesel::sql_query("LISTEN kiunga_clients")
                    .execute(&mut conn)
                    .ok()
                    .map(|_| conn)
            });
        if let Some(mut conn) = conn {
            // Whatever happened while nobody listened is unknown: start afresh.
            changed();
            let mut polls: u32 = 0;
            loop {
                let Some(c) = cache.upgrade() else { return };
                let mut seen = false;
                // A connection cut without a reset (a failover) looks idle forever: a query every
                // second or so finds out.
                polls = polls.wrapping_add(1);
                let mut failed = polls.is_multiple_of(50)
                    && diesel::sql_query("SELECT 1").execute(&mut conn).is_err();
                if !failed {
                    for n in conn.notifications_iter() {
                        match n {
                            Ok(_) => seen = true,
                            Err(_) => {
                                failed = true;
                                break;
                            }
                        }
                    }
                }
                if seen {
                    changed();
                }
                if failed {
                    c.set_healthy(None);
                    changed();
                    tracing::warn!(target: "kiunga::audit", "the token listener lost its database connection; tokens are checked against the database until it is back");
                    break;
                }
                c.set_healthy(Some(Instant::now() + HEALTHY_FOR));
                drop(c);
                std::thread::sleep(POLL);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
