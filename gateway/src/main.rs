//! The `kiunga` command: `serve` (the default) runs the gateway; `mappings check` validates the
//! mapping files against the metadata and prints `file:line: problem` for each problem.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kiunga::app::{AppState, Gateway, StartError};
use kiunga::config::Config;

#[derive(Parser)]
#[command(
    name = "kiunga",
    version,
    about = "FHIR R4 gateway for tracker-style health registries"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway (migrations, metadata and mappings load first).
    Serve,
    /// Load FHIR JSON Bundles (transaction, batch, collection), NDJSON files and directories of them.
    Import {
        /// Files or directories (searched for *.json and *.ndjson).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Org unit (UID or code) owning records whose organisation no mapping resolves.
        #[arg(long)]
        default_org_unit: Option<String>,
        /// Where the full report (every rejection with its reason) is written, as JSON.
        #[arg(long, default_value = "import.report.json")]
        report: PathBuf,
        /// How many rejections the summary shows.
        #[arg(long, default_value_t = 10)]
        show: usize,
    },
    /// Re-translate the stored originals under the current mappings and report what changes.
    Remap {
        /// Apply the changes (in one transaction); without it nothing is written.
        #[arg(long)]
        apply: bool,
    },
    /// Write the blocking keys of Patient/$match for every person again (after upgrading to a
    /// version that has them, or loading people by other means than the gateway).
    MatchKeys,
    /// Match every person again under the current rules (mappings/matching.toml), after the
    /// rules changed: the engine's own links and potential duplicates are made again; people's
    /// decisions (MANUAL links, merges) are never changed. Runs in batches, each its own
    /// transaction, so the gateway may keep serving.
    Rematch {
        /// People per transaction.
        #[arg(long, default_value_t = 50)]
        batch: i64,
    },
    /// Estimate matching.toml's m, u and prior from the registry's own records
    /// (expectation–maximisation over the pairs the blocking keys find; no labelled pairs), print
    /// them beside the current values and, with --write, write a matching.toml that holds them.
    Calibrate {
        /// People whose candidates are compared (a seeded random sample of the registry).
        #[arg(long, default_value_t = 5000)]
        queries: usize,
        /// Random pairs counted for u's starting values.
        #[arg(long, default_value_t = 200_000)]
        random_pairs: usize,
        /// Write the calibrated rules here (matching.toml's text, comments kept); nothing is
        /// written without it. The gateway reads them after a reload (SIGHUP) when written over
        /// mappings/matching.toml; `kiunga rematch` then applies them to existing records.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Register and manage the API clients that may call the gateway (docs/security.md).
    Clients {
        #[command(subcommand)]
        action: ClientsAction,
    },
    /// Deliver the outbox (pushes to the targets in mappings/targets/) without serving HTTP: for
    /// deployments that run delivery apart (then serve with KIUNGA_OUTBOX_WORKERS=false). Several
    /// may run at once.
    Worker,
    /// Inspect and operate the outbox (docs/outbound.md).
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
    /// Work with mapping files.
    Mappings {
        #[command(subcommand)]
        action: MappingsAction,
    },
}

#[derive(Subcommand)]
enum ClientsAction {
    /// Register a client. Without --jwks it authenticates with a secret (client_secret_basic),
    /// printed once; with --jwks, with assertions signed by its keys (private_key_jwt).
    Add {
        /// The client id (3 to 64 of A-Z a-z 0-9 . _ -).
        client_id: String,
        /// What the client is (an EMR, a registry), for people reading `clients list`.
        #[arg(long)]
        name: String,
        /// SMART scopes it may be granted, e.g. "system/Patient.cruds system/*.rs".
        #[arg(long)]
        scopes: String,
        /// Org units (UID or code, comma separated) whose subtrees it may write (and find).
        #[arg(long, value_delimiter = ',')]
        capture: Vec<String>,
        /// Org units whose subtrees it may find, beyond those it may write.
        #[arg(long, value_delimiter = ',')]
        search: Vec<String>,
        /// Programs (UID or code, comma separated) whose data it may see and write; without it,
        /// every program.
        #[arg(long, value_delimiter = ',')]
        programs: Option<Vec<String>>,
        /// A JSON file with the client's public keys (a JWKS, RS384 or ES384).
        #[arg(long)]
        jwks: Option<PathBuf>,
    },
    /// Every client with its state, authentication, scopes and org units (no secrets).
    List,
    /// Revoke a client: its tokens stop working at once and it gets no new ones.
    Revoke { client_id: String },
    /// A new secret for a client (printed once); its tokens stop working at once.
    Rotate { client_id: String },
}

#[derive(Subcommand)]
enum OutboxAction {
    /// Items per target and status, and the age of each target's oldest pending item.
    Status,
    /// Items, newest first.
    List {
        #[arg(long)]
        target: Option<String>,
        /// pending, delivered, dead, unknown or skipped.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One item: its record, attempts, the target's last answer and the target's id.
    Show { id: i64 },
    /// Put a dead, unknown or skipped item back in the queue (after fixing the cause).
    Retry { id: i64 },
    /// Settle an item without sending it, so that the person's later items may go.
    Skip {
        id: i64,
        /// Why (kept with the item).
        #[arg(long)]
        reason: String,
    },
    /// Queue again every record changed since an instant (its current state; what a target
    /// already has is updated, never duplicated).
    Replay {
        /// An instant, e.g. 2026-11-20T00:00:00Z.
        #[arg(long)]
        since: String,
        #[arg(long)]
        target: Option<String>,
    },
}

#[derive(Subcommand)]
enum MappingsAction {
    /// Check every mapping file; exit status 1 when any has a problem.
    Check {
        /// Mappings directory (default: the configured one, `mappings`).
        dir: Option<PathBuf>,
    },
    /// Run the golden cases in DIR/tests (input → tracker values → output); exit 1 on a failure.
    Test {
        /// Mappings directory (default: the configured one, `mappings`).
        dir: Option<PathBuf>,
    },
}

/// A command's exit status. Not `std::process::ExitCode`: the process ends through [`end`], which
/// needs the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ExitCode(u8);

impl ExitCode {
    const SUCCESS: ExitCode = ExitCode(0);
    const FAILURE: ExitCode = ExitCode(1);
}

impl From<u8> for ExitCode {
    fn from(code: u8) -> Self {
        ExitCode(code)
    }
}

/// Ends the process without running C `atexit` handlers. When a command returns, threads it does
/// not own may still be inside libpq: r2d2 tops up its idle connection in the background and the
/// token listener reconnects. OpenSSL's `atexit` cleanup frees the locks those threads' TLS
/// handshakes are using, and the process died with SIGSEGV after its work was done (about one run
/// in ten of `kiunga outbox status`, seen in CI). Everything that matters is finished before this
/// is called: transactions are committed, the audit trail flushed, the workers stopped; only
/// stdout and stderr still hold bytes.
fn end(code: ExitCode) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` takes no pointers and does not return; skipping the `atexit` handlers is
    // its purpose. Rust runs no destructors at exit either way.
    unsafe { libc::_exit(i32::from(code.0)) }
}

fn main() {
    end(run())
}

fn run() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiunga: {e}");
            return ExitCode::from(2);
        }
    };
    kiunga::telemetry::init(config.log_format);
    let command = cli.command.unwrap_or(Command::Serve);
    let mut config = config;
    // Only the server and the worker deliver; a one-off command must not start delivering.
    if !matches!(command, Command::Serve | Command::Worker) {
        config.outbox_workers = false;
        config.write_outbox_rules = false;
    }
    match command {
        Command::Serve => serve(config),
        Command::Worker => worker(config),
        Command::Outbox { action } => outbox(config, action),
        Command::Mappings {
            action: MappingsAction::Check { dir },
        } => check_mappings(config, dir),
        Command::Mappings {
            action: MappingsAction::Test { dir },
        } => test_mappings(config, dir),
        Command::Remap { apply } => remap(config, apply),
        Command::MatchKeys => match_keys(config),
        Command::Rematch { batch } => rematch(config, batch),
        Command::Clients { action } => clients(config, action),
        Command::Calibrate {
            queries,
            random_pairs,
            write,
        } => calibrate(config, queries, random_pairs, write),
        Command::Import {
            paths,
            default_org_unit,
            report,
            show,
        } => import(config, paths, default_org_unit, report, show),
    }
}

fn serve(config: Config) -> ExitCode {
    let state = match AppState::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiunga: {e}");
            return ExitCode::FAILURE;
        }
    };
    let base = state.base.clone();
    let result = actix_web::rt::System::new().block_on(async move {
        let gateway = Gateway::new(state);
        if let Err(e) = kiunga::app::reload_on_sighup(gateway.state.clone()) {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; mapping reload is unavailable");
        }
        let off = gateway.state.config.auth == kiunga::config::AuthMode::Off;
        let state = gateway.state.clone();
        let server = gateway.listen()?;
        tracing::info!(%base, "Kiunga is serving FHIR R4");
        if off {
            tracing::warn!("authentication is OFF (KIUNGA_AUTH=off, development mode): every caller sees and writes everything; never run a registry like this");
        }
        let served = server.await;
        // The access records still waiting for their batch are written before the process ends.
        state.audit.flush();
        served
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiunga: cannot serve: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_mappings(mut config: Config, dir: Option<PathBuf>) -> ExitCode {
    if let Some(d) = dir {
        config.mappings_dir = d;
    }
    let dir = config.mappings_dir.display().to_string();
    match AppState::start(config) {
        Ok(state) => {
            println!("{dir}: OK (mappings version {})", state.mappings().version);
            ExitCode::SUCCESS
        }
        Err(StartError::Mappings(problems)) => {
            for p in &problems.0 {
                println!("{p}");
            }
            eprintln!("{} problem(s)", problems.0.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kiunga: {e}");
            ExitCode::from(2)
        }
    }
}

fn import(
    config: Config,
    paths: Vec<PathBuf>,
    default_org_unit: Option<String>,
    report_path: PathBuf,
    show: usize,
) -> ExitCode {
    use std::io::IsTerminal;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let state = match AppState::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiunga: {e}");
            return ExitCode::FAILURE;
        }
    };
    let default = match default_org_unit {
        None => None,
        Some(key) => {
            match state.metadata.org_unit(&key) {
                Some(ou) => Some(ou.id),
                None => {
                    eprintln!("kiunga: --default-org-unit `{key}` is not an org unit (give a UID or code)");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        // The unit in progress is rolled back; finished ones stay. A second Ctrl-C kills at once.
        if flag.swap(true, Ordering::SeqCst) {
            end(ExitCode(130));
        }
        eprintln!("kiunga: interrupted; finishing with the records already committed (Ctrl-C again to kill)");
    }) {
        eprintln!("kiunga: cannot install the Ctrl-C handler: {e}");
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} files {elapsed} (eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let bar2 = bar.clone();
    let progress = Box::new(move |done: u64, total: u64| match &bar2 {
        Some(b) => {
            b.set_length(total);
            b.set_position(done);
        }
        None => {
            if total > 0 && (done * 10 / total != (done - 1) * 10 / total || done == total) {
                eprintln!("kiunga: imported {done}/{total} files");
            }
        }
    });
    let result = kiunga::import::run(
        &state,
        &paths,
        kiunga::import::Options {
            default_org_unit: default,
            interrupted,
            progress,
        },
    );
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match result {
        Ok(report) => {
            print!("{}", report.summary(show));
            match serde_json::to_vec_pretty(&report)
                .map(|bytes| std::fs::write(&report_path, bytes))
            {
                Ok(Ok(())) => println!("report: {}", report_path.display()),
                _ => eprintln!(
                    "kiunga: could not write the report to {}",
                    report_path.display()
                ),
            }
            if report.interrupted {
                ExitCode::from(130)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("kiunga: import failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn test_mappings(mut config: Config, dir: Option<PathBuf>) -> ExitCode {
    if let Some(d) = dir {
        config.mappings_dir = d;
    }
    let dir = config.mappings_dir.clone();
    let state = match AppState::start(config) {
        Ok(s) => s,
        Err(StartError::Mappings(problems)) => {
            for p in &problems.0 {
                println!("{p}");
            }
            eprintln!("the mappings have problems; fix them first (`kiunga mappings check`)");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("kiunga: {e}");
            return ExitCode::from(2);
        }
    };
    let outcomes = kiunga::mapping::golden::run(&dir, &state.metadata, &state.mappings());
    let failed = outcomes.iter().filter(|o| !o.problems.is_empty()).count();
    for o in &outcomes {
        if o.problems.is_empty() {
            println!("PASS {}", o.name);
        } else {
            println!("FAIL {}: {}", o.name, o.problems.join("; "));
        }
    }
    println!("{} passed, {} failed", outcomes.len() - failed, failed);
    if failed > 0 || outcomes.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Starts the gateway's state (migrations, metadata, mappings) and runs `f` as one unit of work
/// of the system actor: what `remap` and `match-keys` share. The mapping set is returned with the
/// result, for the summary line. The error says whether start-up failed or the unit of work did
/// (which then changed nothing).
fn system_unit<T>(
    config: Config,
    f: impl FnOnce(&mut kiunga::store::Scoped, &kiunga::tracker::Env) -> Result<T, kiunga::Error>,
) -> Result<(T, std::sync::Arc<kiunga::mapping::MappingSet>), UnitError> {
    let state = AppState::start(config).map_err(|e| UnitError::Start(e.to_string()))?;
    let mappings = state.mappings();
    let env = kiunga::tracker::Env {
        md: &state.metadata,
        mappings: &mappings,
        strict: false,
        default_org_unit: state.default_org_unit,
    };
    let ctx = kiunga::context::RequestContext::system();
    let out = state
        .pool
        .get()
        .map_err(kiunga::Error::from)
        .and_then(|mut conn| kiunga::store::Scoped::transaction(&mut conn, &ctx, |s| f(s, &env)))
        .map_err(|e| UnitError::Work(e.to_string()))?;
    Ok((out, mappings))
}

enum UnitError {
    Start(String),
    Work(String),
}

fn match_keys(config: Config) -> ExitCode {
    let result = system_unit(config, |s, env| {
        if env.mappings.matching.is_none() {
            return Err(kiunga::Error::invalid(
                "matching is off (no mappings/matching.toml); nothing to do",
            ));
        }
        kiunga::rest::identity::rebuild_keys(s, env)
    });
    match result {
        Ok((n, mappings)) => {
            println!(
                "blocking keys written for {n} people (rules {})",
                mappings
                    .matching
                    .as_ref()
                    .map(|m| m.version.as_str())
                    .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(UnitError::Start(e) | UnitError::Work(e)) => {
            eprintln!("kiunga: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `step` (one batch after an id, in its own transaction) until it says there is no more.
fn in_batches(
    state: &AppState,
    step: impl Fn(
        &mut kiunga::store::Scoped,
        &kiunga::tracker::Env,
        i64,
    ) -> Result<Option<(i64, usize)>, kiunga::Error>,
) -> Result<usize, kiunga::Error> {
    let mappings = state.mappings();
    let env = kiunga::tracker::Env {
        md: &state.metadata,
        mappings: &mappings,
        strict: false,
        default_org_unit: state.default_org_unit,
    };
    let ctx = kiunga::context::RequestContext::system();
    let mut conn = state.pool.get()?;
    let (mut after, mut done) = (0, 0);
    while let Some((last, n)) =
        kiunga::store::Scoped::transaction(&mut conn, &ctx, |s| step(s, &env, after))?
    {
        after = last;
        done += n;
    }
    Ok(done)
}

fn worker(mut config: Config) -> ExitCode {
    config.outbox_workers = true;
    let state = match AppState::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiunga: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(workers) = state.outbox else {
        eprintln!("kiunga worker: no outbound target is enabled (mappings/targets/*.toml; a demo target is enabled by setting its URL variable, docs/outbound.md)");
        return ExitCode::FAILURE;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = tx.send(());
    }) {
        eprintln!("kiunga worker: cannot handle signals: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!("kiunga worker: delivering the outbox");
    let _ = rx.recv();
    tracing::info!("kiunga worker: stopping after the items in hand");
    workers.stop();
    ExitCode::SUCCESS
}

fn outbox(config: Config, action: OutboxAction) -> ExitCode {
    use kiunga::outbox::admin;
    let state = match AppState::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiunga: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = || -> Result<serde_json::Value, kiunga::Error> {
        let mut conn = state.pool.get()?;
        match action {
            OutboxAction::Status => admin::status(&mut conn),
            OutboxAction::List {
                target,
                status,
                limit,
            } => admin::list(&mut conn, target.as_deref(), status.as_deref(), limit),
            OutboxAction::Show { id } => admin::show(&mut conn, id),
            OutboxAction::Retry { id } => admin::retry(&mut conn, id),
            OutboxAction::Skip { id, reason } => admin::skip(&mut conn, id, &reason),
            OutboxAction::Replay { since, target } => {
                let since = chrono::DateTime::parse_from_rfc3339(&since)
                    .map_err(|e| {
                        kiunga::Error::invalid(format!("--since `{since}` is not an instant: {e}"))
                    })?
                    .with_timezone(&chrono::Utc);
                admin::replay(&mut conn, since, target.as_deref())
            }
        }
    };
    match run() {
        Ok(v) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiunga outbox: {e}");
            ExitCode::FAILURE
        }
    }
}

fn clients(config: Config, action: ClientsAction) -> ExitCode {
    use kiunga::auth::admin;
    let state = match AppState::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiunga: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = || -> Result<(), kiunga::Error> {
        let mut conn = state.pool.get()?;
        match action {
            ClientsAction::Add {
                client_id,
                name,
                scopes,
                capture,
                search,
                programs,
                jwks,
            } => {
                let jwks = match jwks {
                    None => None,
                    Some(path) => {
                        let text = std::fs::read_to_string(&path).map_err(|e| {
                            kiunga::Error::invalid(format!("{}: {e}", path.display()))
                        })?;
                        Some(serde_json::from_str(&text).map_err(|e| {
                            kiunga::Error::invalid(format!("{}: not JSON: {e}", path.display()))
                        })?)
                    }
                };
                let secret = admin::add(
                    &mut conn,
                    &state.metadata,
                    &admin::Registration {
                        client_id: &client_id,
                        name: &name,
                        scopes: &scopes,
                        capture: &capture,
                        search: &search,
                        programs: programs.as_deref(),
                        jwks,
                    },
                )?;
                println!("client {client_id} registered");
                if let Some(secret) = secret {
                    println!("client_secret: {secret}");
                    println!("(shown once; only its hash is stored)");
                }
            }
            ClientsAction::List => {
                for line in admin::list(&mut conn)? {
                    println!("{line}");
                }
            }
            ClientsAction::Revoke { client_id } => {
                admin::revoke(&mut conn, &client_id)?;
                println!("client {client_id} revoked; its tokens no longer work");
            }
            ClientsAction::Rotate { client_id } => {
                let secret = admin::rotate(&mut conn, &client_id)?;
                println!("client_secret: {secret}");
                println!("(shown once; the old secret and its tokens no longer work)");
            }
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiunga: clients: {e}");
            ExitCode::FAILURE
        }
    }
}

fn calibrate(
    config: Config,
    queries: usize,
    random_pairs: usize,
    write: Option<PathBuf>,
) -> ExitCode {
    use kiunga::matching::calibrate;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let dir = config.mappings_dir.clone();
    let result = system_unit(config, kiunga::rest::identity::registry);
    let (people, mappings) = match result {
        Ok(x) => x,
        Err(UnitError::Start(e) | UnitError::Work(e)) => {
            eprintln!("kiunga: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(rules) = mappings.matching.as_ref() else {
        eprintln!("kiunga: matching is off (no mappings/matching.toml); nothing to calibrate");
        return ExitCode::FAILURE;
    };
    let mut sample: Vec<usize> = (0..people.len()).collect();
    sample.shuffle(&mut rand::rngs::StdRng::seed_from_u64(2026));
    sample.truncate(queries.max(1));
    let candidates = calibrate::candidate_pairs(rules, &people, &sample);
    let random = calibrate::random_pairs(people.len(), random_pairs, 2026);
    let e = match calibrate::estimate(rules, &people, &candidates, &random) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("kiunga: calibrate: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{} people; {} of them matched against the registry: {} candidate pairs, {} random pairs; {} iterations",
        people.len(),
        sample.len(),
        e.pairs,
        e.random_pairs,
        e.iterations
    );
    println!(
        "prior_log2_odds {:>8.2} -> {:.2}   (about {:.0} of the candidate pairs are one person)",
        e.prior_was, e.prior_log2_odds, e.expected_matches
    );
    println!("field            m now  -> estimate      u now  -> estimate  (random pairs)  pairs compared");
    for f in &e.fields {
        println!(
            "{:<14} {:>8.4} -> {:<8.4}  {:>10.6} -> {:<10.6} ({:<10.6})  {}",
            f.field, f.m_was, f.m, f.u_was, f.u, f.u_random, f.compared
        );
    }
    let Some(path) = write else {
        println!("nothing written (--write FILE writes the calibrated rules)");
        return ExitCode::SUCCESS;
    };
    let source = dir.join("matching.toml");
    let written = std::fs::read_to_string(&source)
        .map_err(|e| format!("{}: {e}", source.display()))
        .and_then(|text| {
            let base = rules.version.split('+').next().unwrap_or_default();
            let version = format!("{base}-calibrated-{}", chrono::Utc::now().format("%Y%m%d"));
            kiunga::mapping::matching::with_estimate(&text, &e, &version)
                .map_err(|e| format!("{}: {e}", source.display()))
        })
        .and_then(|text| {
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
        });
    match written {
        Ok(()) => {
            println!("written to {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiunga: calibrate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn rematch(config: Config, batch: i64) -> ExitCode {
    let state = match AppState::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiunga: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mappings = state.mappings();
    let Some(rules) = mappings.matching.as_ref() else {
        eprintln!("kiunga: matching is off (no mappings/matching.toml); nothing to re-match");
        return ExitCode::FAILURE;
    };
    let batch = batch.max(1);
    type Counts = Vec<(String, String, i64)>;
    let counts = |state: &AppState| -> Result<Counts, kiunga::Error> {
        kiunga::store::links::counts(&mut *state.pool.get()?)
    };
    let run = || -> Result<(usize, Counts, Counts), kiunga::Error> {
        let before = counts(&state)?;
        // Keys first, for everyone: a person matched early must find those matched later.
        in_batches(&state, |s, env, after| {
            kiunga::rest::identity::rebuild_keys_after(s, env, after, 1000)
        })?;
        let n = in_batches(&state, |s, env, after| {
            kiunga::rest::identity::rematch_after(s, env, after, batch)
        })?;
        Ok((n, before, counts(&state)?))
    };
    match run() {
        Ok((n, before, after)) => {
            println!("{n} people matched again under rules {}", rules.version);
            let get = |rows: &[(String, String, i64)], status: &str, origin: &str| {
                rows.iter()
                    .find(|(s, o, _)| s == status && o == origin)
                    .map_or(0, |r| r.2)
            };
            for (status, origin) in [
                ("LINKED", "AUTO"),
                ("OPEN", "AUTO"),
                ("LINKED", "MANUAL"),
                ("INVALID", "MANUAL"),
                ("MERGED", "MANUAL"),
            ] {
                println!(
                    "  {status:<8} {origin:<6} {:>8} -> {}",
                    get(&before, status, origin),
                    get(&after, status, origin)
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiunga: rematch stopped: {e} (batches already done stay done; running it again is safe)");
            ExitCode::FAILURE
        }
    }
}

fn remap(config: Config, apply: bool) -> ExitCode {
    let result = system_unit(config, |s, env| kiunga::rest::remap::remap(s, env, apply));
    match result {
        Ok((changes, mappings)) => {
            for c in &changes {
                let mark = if c.refused {
                    "REFUSED"
                } else if apply {
                    "CHANGED"
                } else {
                    "WOULD CHANGE"
                };
                println!("{mark} {}: {}", c.resource, c.details.join("; "));
            }
            let n = changes.iter().filter(|c| !c.refused).count();
            let refused = changes.len() - n;
            println!(
                "{n} record(s) {} under mappings {}; {refused} original(s) no longer translate{}",
                if apply { "changed" } else { "would change" },
                mappings.version,
                if apply || n == 0 {
                    ""
                } else {
                    " (run with --apply to write the changes)"
                }
            );
            ExitCode::SUCCESS
        }
        Err(UnitError::Start(e)) => {
            eprintln!("kiunga: {e}");
            ExitCode::FAILURE
        }
        Err(UnitError::Work(e)) => {
            eprintln!("kiunga: remap failed, nothing was changed: {e}");
            ExitCode::FAILURE
        }
    }
}
