//! Postgres through diesel: the connection pool, embedded migrations, the DHIS2 metadata import and
//! the scoped data access that every request goes through.

/// Inserts `rows` (a slice) into `table`; evaluates to diesel's own result, so that a caller can
/// tell a unique refusal apart.
///
/// One row goes as an `INSERT` of one row, whose text diesel keeps prepared on the connection;
/// more go by binary `COPY` (no SQL to parse or plan at any size). A multi-row `INSERT`, as they
/// went before, has a text that changes with its length: Postgres parsed and planned it on every
/// call, and a Patient create ran five of them (measured: 0.42 to 0.48 x raw with these two paths
/// instead); the access records of a batch of reads were one more.
macro_rules! insert_rows {
    ($conn:expr, $table:expr, $rows:expr) => {{
        let rows = $rows;
        let result: diesel::QueryResult<()> = match rows {
            [] => Ok(()),
            [row] => diesel::RunQueryDsl::execute(diesel::insert_into($table).values(row), $conn)
                .map(drop),
            // `execute` of a COPY is its own method, not `RunQueryDsl`'s.
            _ => diesel::copy_from($table)
                .from_insertable(rows)
                .execute($conn)
                .map(drop),
        };
        result
    }};
}

pub mod audit;
pub mod cache;
pub mod clients;
pub mod dynamic;
pub mod enrollments;
pub mod events;
pub mod links;
pub mod logs;
pub mod match_keys;
pub mod merge;
pub mod metadata_import;
pub mod orgs;
pub mod outbox;
pub mod page;
pub mod patients;
pub mod pending;
pub mod relationships;
pub mod schema;
mod scoped;

use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub use scoped::{person_in_ids_sql, person_in_scope_sql, EntryAt, ProgramScope, RuleOn, Scoped};

use crate::error::Error;

pub type PgPool = Pool<ConnectionManager<PgConnection>>;
pub type PgPooled = PooledConnection<ConnectionManager<PgConnection>>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The URL libpq is given: `gssencmode=disable` unless the URL sets it. libpq otherwise asks
/// Kerberos (krb5) whether GSSAPI encryption is possible on every new connection, and a process
/// that exits while the pool's background thread is connecting dies in krb5's teardown
/// (`k5_mutex_lock: Assertion failed`, or SIGSEGV): seen in `kiunga outbox status` and in test
/// binaries at exit. Kerberos authentication itself (`gss` in pg_hba.conf) is not affected.
pub fn libpq_url(database_url: &str) -> String {
    if database_url.contains("gssencmode=") {
        return database_url.to_string();
    }
    let sep = if database_url.contains('?') { '&' } else { '?' };
    format!("{database_url}{sep}gssencmode=disable")
}

/// Every pooled connection plans a prepared statement once. Postgres's default (`auto`) plans
/// each execution anew for as long as the custom plan looks cheaper than the generic one, which
/// for our `= ANY($1)` lookups is always: 0.6–0.8 ms of planning per statement, more than running
/// it (measured on the statement log, docs/performance.md). The gateway's statements are lookups
/// by key whose best plan does not depend on the values bound; a search whose best plan would
/// (a broad date range, say) gets the generic plan too, a trade accepted for the common case.
#[derive(Debug)]
struct GenericPlans;

impl diesel::r2d2::CustomizeConnection<PgConnection, diesel::r2d2::Error> for GenericPlans {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::connection::SimpleConnection;
        conn.batch_execute("SET plan_cache_mode = force_generic_plan")
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// A bounded pool: a request waits at most `timeout` for a connection and then gets a 503.
pub fn pool(
    database_url: &str,
    size: u32,
    timeout: Duration,
    generic_plans: bool,
) -> Result<PgPool, Error> {
    let manager = ConnectionManager::<PgConnection>::new(libpq_url(database_url));
    let builder = Pool::builder();
    let builder = if generic_plans {
        builder.connection_customizer(Box::new(GenericPlans))
    } else {
        builder
    };
    builder
        .max_size(size)
        .min_idle(Some(1.min(size)))
        .connection_timeout(timeout)
        .test_on_check_out(false)
        .build(manager)
        .map_err(|e| Error::Unavailable(format!("cannot connect to the database: {e}")))
}

pub fn run_migrations(conn: &mut PgConnection) -> Result<usize, Error> {
    conn.run_pending_migrations(MIGRATIONS)
        .map(|applied| applied.len())
        .map_err(|e| Error::Internal(format!("migrations failed: {e}")))
}

/// True when every embedded migration has been applied (for `/readyz`).
pub fn migrations_current(conn: &mut PgConnection) -> Result<bool, Error> {
    conn.has_pending_migration(MIGRATIONS)
        .map(|pending| !pending)
        .map_err(|e| Error::Internal(format!("cannot read migration state: {e}")))
}

#[cfg(test)]
mod url_tests {
    use super::libpq_url;

    #[test]
    fn gss_encryption_is_off_unless_the_url_says_otherwise() {
        assert_eq!(
            libpq_url("postgres://u@h/db"),
            "postgres://u@h/db?gssencmode=disable"
        );
        assert_eq!(
            libpq_url("postgres://u@h/db?sslmode=require"),
            "postgres://u@h/db?sslmode=require&gssencmode=disable"
        );
        assert_eq!(
            libpq_url("postgres://u@h/db?gssencmode=require"),
            "postgres://u@h/db?gssencmode=require"
        );
    }
}
