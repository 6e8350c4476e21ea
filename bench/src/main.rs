//! `make bench`: the gateway against a raw-Postgres baseline, side by side in one run.
//!
//! Starts the release gateway on a database of its own, loads a synthetic population, and runs each
//! scenario twice (the raw baseline, then the gateway) with the same number of clients, so that
//! the ratio gateway ÷ raw is measured under the same machine noise. Read scenarios run at two
//! population sizes to show how latency grows. Prints one table and writes a JSON file.

mod cpu;
mod gateway;
mod gen;
mod load;
mod outbound;
mod population;
mod raw;
mod report;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use diesel::prelude::*;
use rand::Rng;
use serde_json::Value;

use load::Stats;
use population::{national_id, patient_uid, Ids};
use report::{Row, Run};

#[derive(Parser, Debug, Clone)]
#[command(about = "Throughput, latency and memory of the Kiunga gateway against raw Postgres")]
struct Args {
    /// Database the benchmark owns: it is wiped (schema `public` dropped) at the start.
    #[arg(long, env = "KIUNGA_BENCH_DATABASE_URL")]
    database_url: String,
    /// The gateway binary (a release build).
    #[arg(long, default_value = "target/release/kiunga")]
    gateway: PathBuf,
    #[arg(long, default_value = "127.0.0.1:18080")]
    listen: String,
    /// Concurrent clients of the read and Patient-create scenarios.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Concurrent clients sending transaction Bundles.
    #[arg(long, default_value_t = 2)]
    bundle_clients: usize,
    /// People per transaction Bundle (each with 1 Encounter and 5 Observations).
    #[arg(long, default_value_t = 100)]
    bundle_people: usize,
    /// Measured seconds per scenario and side.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds before each measurement.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Rounds per side of the authentication A/B (development mode, then a token, alternating);
    /// more rounds average out this machine's drift.
    #[arg(long, default_value_t = 2)]
    auth_rounds: u32,
    /// Population sizes at which the read scenarios run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    scales: Vec<u64>,
    /// Connection pool size of both the gateway and the raw baseline.
    #[arg(long, default_value_t = 10)]
    pool_size: u32,
    #[arg(long, default_value = "target/bench/latest.json")]
    out: PathBuf,
    /// Run only the scenarios whose name contains this text (e.g. "Bundle"; for profiling).
    #[arg(long)]
    only: Option<String>,
    /// Use a gateway that is already running at this base URL (e.g. under perf) instead of starting
    /// one; the database is then neither wiped nor re-migrated, and memory is not reported.
    #[arg(long)]
    external: Option<String>,
    /// Where the gateway's own log goes.
    #[arg(long, default_value = "target/bench/gateway.log")]
    gateway_log: PathBuf,
    /// Run the outbound-push benchmark instead (`make bench-outbound`): the outbox's cost to
    /// Patient create, and a backlog drained by `kiunga worker` to the OpenMRS double.
    #[arg(long)]
    outbound: bool,
    /// Outbound: items in the backlog to drain.
    #[arg(long, default_value_t = 100_000)]
    backlog: u64,
    /// Outbound: the target's answer latency, in milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Outbound: the target's delivery concurrency (worker threads).
    #[arg(long, default_value_t = 8)]
    target_concurrency: usize,
    /// Outbound: A/B rounds of Patient create, targets on and off.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn main() {
    let args = Args::parse();
    if args.outbound {
        let settings = outbound::Settings {
            backlog: args.backlog,
            latency_ms: args.latency_ms,
            concurrency: args.target_concurrency,
            rounds: args.rounds,
        };
        let out = PathBuf::from("target/bench/outbound.json");
        let result = outbound::run(&args, &settings).and_then(|v| {
            std::fs::create_dir_all("target/bench").map_err(|e| e.to_string())?;
            std::fs::write(&out, serde_json::to_string_pretty(&v).unwrap_or_default())
                .map_err(|e| format!("{}: {e}", out.display()))
        });
        if let Err(e) = result {
            eprintln!("kiunga-bench --outbound: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = run(args) {
        eprintln!("kiunga-bench: {e}");
        std::process::exit(1);
    }
}

fn say(msg: impl AsRef<str>) {
    eprintln!("kiunga-bench: {}", msg.as_ref());
}

fn run(args: Args) -> Result<(), String> {
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut scales = args.scales.clone();
    scales.sort_unstable();
    scales.dedup();
    if scales.is_empty() {
        return Err("--scales needs at least one population size".into());
    }
    let mut admin = PgConnection::establish(&args.database_url)
        .map_err(|e| format!("connecting to the benchmark database: {e}"))?;
    let mut gw = match &args.external {
        Some(_) => None,
        None => {
            say("wiping the benchmark database");
            diesel::sql_query("DROP SCHEMA IF EXISTS public CASCADE")
                .execute(&mut admin)
                .and_then(|_| diesel::sql_query("CREATE SCHEMA public").execute(&mut admin))
                .map_err(|e| format!("wiping the benchmark database: {e}"))?;
            say("starting the gateway (migrations and demo metadata load on start)");
            copy_mappings(&bench_mappings())?;
            Some(gateway::Gateway::start(
                &args.gateway,
                &args.database_url,
                &args.listen,
                args.pool_size,
                &bench_mappings(),
                &args.gateway_log,
                false,
            )?)
        }
    };
    let pool = raw::pool(&args.database_url, args.pool_size)?;
    let ids = Ids::load(&mut admin)?;
    let base = match (&args.external, &gw) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, Some(g)) => g.base.clone(),
        (None, None) => return Err("no gateway".into()),
    };
    let ctx = Ctx {
        args: args.clone(),
        base,
        ids,
        pool,
        gateway: gw.take(),
    };

    let mut rows = Vec::new();
    for &scale in &scales {
        let have = population::count(&mut admin)?;
        if have < scale {
            say(format!(
                "loading people {}..={scale} (10 Observations each)",
                have + 1
            ));
            let t = std::time::Instant::now();
            population::load(&mut admin, &ctx.ids, have + 1, scale)?;
            say(format!("  loaded in {:.1} s", t.elapsed().as_secs_f64()));
            if ctx.args.external.is_none() {
                match_keys(&ctx)?;
            }
        }
        verify(&ctx, scale)?;
        rows.extend(read_scenarios(&ctx, scale)?);
    }
    let top = *scales.last().unwrap_or(&0);
    rows.extend(auth_scenarios(&ctx, top)?);
    rows.extend(write_scenarios(&ctx, top)?);
    let mut gw = ctx.gateway;
    let peak = gw.as_ref().and_then(|g| g.peak_rss_mib());
    let now_rss = gw.as_ref().and_then(|g| g.rss_mib());
    if let Some(g) = gw.as_mut() {
        g.stop();
    }

    let run = Run::new(&args_summary(&args), rows, peak, now_rss, &scales);
    print!("{}", run.table());
    let json = serde_json::to_string_pretty(&run.to_json()).map_err(|e| e.to_string())?;
    std::fs::write(&args.out, json + "\n").map_err(|e| format!("{}: {e}", args.out.display()))?;
    say(format!("figures written to {}", args.out.display()));
    Ok(())
}

fn args_summary(a: &Args) -> Value {
    serde_json::json!({
        "clients": a.clients,
        "bundle_clients": a.bundle_clients,
        "bundle_people": a.bundle_people,
        "duration_s": a.duration,
        "warmup_s": a.warmup,
        "pool_size": a.pool_size,
        "auth_rounds": a.auth_rounds,
    })
}

struct Ctx {
    args: Args,
    base: String,
    ids: Ids,
    pool: raw::PgPool,
    /// The gateway this run started (None with --external).
    gateway: Option<gateway::Gateway>,
}

/// The gateway's mapping files for this run: a copy of mappings/, so that the matching-off
/// scenario can switch linking off and back (SIGHUP) without touching the repository.
fn bench_mappings() -> PathBuf {
    PathBuf::from("target/bench/mappings")
}

fn copy_mappings(to: &Path) -> Result<(), String> {
    let from = Path::new("mappings");
    let _ = std::fs::remove_dir_all(to);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        std::fs::create_dir_all(to.join(&rel)).map_err(|e| format!("{}: {e}", to.display()))?;
        for entry in std::fs::read_dir(from.join(&rel)).map_err(|e| format!("mappings/: {e}"))? {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = rel.join(entry.file_name());
            if entry.path().is_dir() {
                stack.push(name);
            } else {
                std::fs::copy(entry.path(), to.join(&name))
                    .map_err(|e| format!("{}: {e}", name.display()))?;
            }
        }
    }
    Ok(())
}

/// Writes every person's blocking keys (`kiunga match-keys`): the population is loaded in SQL,
/// and a registry filled through the gateway would have them.
fn match_keys(ctx: &Ctx) -> Result<(), String> {
    let t = std::time::Instant::now();
    let status = std::process::Command::new(&ctx.args.gateway)
        .arg("match-keys")
        .env("KIUNGA_DATABASE_URL", &ctx.args.database_url)
        .env("KIUNGA_MAPPINGS_DIR", bench_mappings())
        .env("KIUNGA_LOG", "warn")
        .status()
        .map_err(|e| format!("kiunga match-keys: {e}"))?;
    if !status.success() {
        return Err(format!("kiunga match-keys failed: {status}"));
    }
    say(format!(
        "  blocking keys written in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Switches matching on write on or off in the run's mapping copy and waits until the gateway
/// has reloaded it.
fn set_linking(ctx: &Ctx, on: bool) -> Result<(), String> {
    let Some(g) = &ctx.gateway else {
        return Err("the matching-off scenario needs a gateway this run started".into());
    };
    let file = bench_mappings().join("matching.toml");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (from, to) = if on {
        ("on_write = false", "on_write = true")
    } else {
        ("on_write = true", "on_write = false")
    };
    if !text.contains(from) {
        return Err(format!("{}: no `{from}` to switch", file.display()));
    }
    std::fs::write(&file, text.replace(from, to)).map_err(|e| e.to_string())?;
    let version = || -> Result<String, String> {
        let v: Value = reqwest::blocking::get(format!("{}/metadata", ctx.base))
            .and_then(|r| r.json())
            .map_err(|e| format!("GET metadata: {e}"))?;
        Ok(v["extension"][0]["valueString"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    };
    let before = version()?;
    g.reload_mappings()?;
    for _ in 0..100 {
        if version()? != before {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("the gateway did not reload its mappings within 10 s".into())
}

impl Ctx {
    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.args.warmup)
    }
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.args.duration)
    }
    fn wanted(&self, scenario: &str) -> bool {
        self.args
            .only
            .as_deref()
            .is_none_or(|o| scenario.contains(o))
    }
}

const JSON: &str = "application/fhir+json";
const XML: &str = "application/fhir+xml";

fn http_client(_: usize) -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())
}

/// GET `url` and fail on anything but 200. Bodies are read in full (they are part of the cost)
/// but parsed only by `verify`, so that the load generator spends as little CPU as it can.
fn get(c: &reqwest::blocking::Client, url: &str, accept: &str) -> Result<Vec<u8>, String> {
    let r = c
        .get(url)
        .header("Accept", accept)
        .send()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = r.status();
    let body = r.bytes().map_err(|e| format!("GET {url}: {e}"))?;
    if status.as_u16() != 200 {
        return Err(format!(
            "GET {url}: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        ));
    }
    Ok(body.to_vec())
}

fn get_json(c: &reqwest::blocking::Client, url: &str) -> Result<Value, String> {
    serde_json::from_slice(&get(c, url, JSON)?).map_err(|e| format!("GET {url}: {e}"))
}

/// Reads a sample of the population back through the gateway: if the generator and the gateway
/// disagree about the shape of the rows, the run stops here instead of measuring errors.
fn verify(ctx: &Ctx, scale: u64) -> Result<(), String> {
    let c = http_client(0)?;
    for i in [1, scale / 2, scale] {
        let (uid, nid) = (patient_uid(i), national_id(i));
        let p = get_json(&c, &format!("{}/Patient/{uid}", ctx.base))?;
        let got = p["identifier"]
            .as_array()
            .and_then(|ids| ids.iter().find_map(|x| x["value"].as_str()));
        if got != Some(nid.as_str()) || p["name"][0]["family"].as_str().is_none() {
            return Err(format!(
                "Patient/{uid} does not read back as generated: {p}"
            ));
        }
        let s = get_json(
            &c,
            &format!(
                "{}/Patient?identifier=http://example.org/national-id|{nid}",
                ctx.base
            ),
        )?;
        let o = get_json(
            &c,
            &format!(
                "{}/Observation?patient={uid}&code=http://loinc.org|29463-7",
                ctx.base
            ),
        )?;
        let e = get_json(&c, &format!("{}/Patient/{uid}/$everything", ctx.base))?;
        let entries = |v: &Value| v["entry"].as_array().map_or(0, Vec::len);
        if s["total"] != 1 || o["total"] != 2 || entries(&e) < 13 {
            return Err(format!(
                "person {i} does not search back as generated: identifier total {}, weight total {}, $everything entries {}",
                s["total"], o["total"], entries(&e)
            ));
        }
        raw::everything(&ctx.pool, &ctx.ids, &uid)?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Read {
    ById,
    ByIdentifier,
    ObservationsByPatientCode,
    Everything,
}

impl Read {
    fn name(self) -> &'static str {
        match self {
            Read::ById => "read Patient by id",
            Read::ByIdentifier => "search Patient by identifier",
            Read::ObservationsByPatientCode => "search Observation by patient+code",
            Read::Everything => "Patient $everything",
        }
    }

    fn url(self, base: &str, i: u64) -> String {
        let uid = patient_uid(i);
        match self {
            Read::ById => format!("{base}/Patient/{uid}"),
            Read::ByIdentifier => format!(
                "{base}/Patient?identifier=http://example.org/national-id|{}",
                national_id(i)
            ),
            Read::ObservationsByPatientCode => {
                format!("{base}/Observation?patient={uid}&code=http://loinc.org|29463-7")
            }
            Read::Everything => format!("{base}/Patient/{uid}/$everything"),
        }
    }

    fn raw(self, ctx: &Ctx, i: u64) -> Result<u64, String> {
        let uid = patient_uid(i);
        match self {
            Read::ById => raw::read_person(&ctx.pool, &ctx.ids, &uid),
            Read::ByIdentifier => raw::search_identifier(&ctx.pool, &ctx.ids, &national_id(i)),
            Read::ObservationsByPatientCode => {
                raw::search_observations(&ctx.pool, ctx.ids.weight, &uid)
            }
            Read::Everything => raw::everything(&ctx.pool, &ctx.ids, &uid).map(|_| 1),
        }
    }
}

fn read_scenarios(ctx: &Ctx, scale: u64) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let pick = move || rand::thread_rng().gen_range(1..=scale);
    for read in [
        Read::ById,
        Read::ByIdentifier,
        Read::ObservationsByPatientCode,
        Read::Everything,
    ] {
        if !ctx.wanted(read.name()) {
            continue;
        }
        say(format!("{} at {scale} people: raw", read.name()));
        let raw = load::run(
            ctx.args.clients,
            ctx.warmup(),
            ctx.duration(),
            |_| Ok(()),
            |_, _, _| read.raw(ctx, pick()),
        )?;
        let mut gateway = Vec::new();
        for (fmt, accept) in [("json", JSON), ("xml", XML)] {
            say(format!("{} at {scale} people: gateway {fmt}", read.name()));
            let s = load::run(
                ctx.args.clients,
                ctx.warmup(),
                ctx.duration(),
                http_client,
                |c, _, _| get(c, &read.url(&ctx.base, pick()), accept).map(|_| 1),
            )?;
            gateway.push((fmt, s));
        }
        for (fmt, s) in gateway {
            rows.push(Row::new(
                read.name(),
                "read",
                Some(scale),
                fmt,
                s,
                Some(raw.clone()),
            ));
        }
    }
    Ok(rows)
}

/// The port after `listen`'s, for the authenticated gateway.
fn next_port(listen: &str) -> Result<String, String> {
    let (host, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| format!("--listen `{listen}` has no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--listen `{listen}`: bad port"))?;
    Ok(format!("{host}:{}", port + 1))
}

/// Registers the bench's API client (`kiunga clients add`): read and search of Patient and
/// Observation, and as search scope every org unit one level below the root, which holds the
/// whole population but is not the unrestricted scope, so that every query is filtered by
/// org-unit path in SQL as a real client's is. Returns its secret.
fn register_client(ctx: &Ctx, admin: &mut PgConnection) -> Result<String, String> {
    #[derive(QueryableByName)]
    struct Uid {
        #[diesel(sql_type = diesel::sql_types::Text)]
        uid: String,
    }
    let units: Vec<Uid> = diesel::sql_query(
        "SELECT uid FROM org_unit WHERE level = (SELECT min(level) + 1 FROM org_unit) ORDER BY uid",
    )
    .load(admin)
    .map_err(|e| format!("org units: {e}"))?;
    let search = units
        .into_iter()
        .map(|u| u.uid)
        .collect::<Vec<_>>()
        .join(",");
    let out = std::process::Command::new(&ctx.args.gateway)
        .args([
            "clients",
            "add",
            "bench-reader",
            "--name",
            "kiunga-bench",
            "--scopes",
        ])
        .arg("system/Patient.rs system/Observation.rs")
        .arg("--search")
        .arg(&search)
        .env("KIUNGA_DATABASE_URL", &ctx.args.database_url)
        .env("KIUNGA_MAPPINGS_DIR", bench_mappings())
        .env("KIUNGA_LOG", "warn")
        .output()
        .map_err(|e| format!("kiunga clients add: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "kiunga clients add printed no secret: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn access_token(root: &str, secret: &str) -> Result<String, String> {
    let v: Value = reqwest::blocking::Client::new()
        .post(format!("{root}/auth/token"))
        .basic_auth("bench-reader", Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .and_then(|r| r.json())
        .map_err(|e| format!("POST /auth/token: {e}"))?;
    v["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("POST /auth/token: no token in {v}"))
}

/// What authentication, scopes and org-unit filtering cost on reads and searches (issue 10):
/// the same gateway binary on the same database, once in development mode and once requiring a
/// bearer token of a client with a restricted search scope, run alternately (A B A B) with the
/// same clients and population. The "raw" side of these rows is the development-mode gateway.
fn auth_scenarios(ctx: &Ctx, scale: u64) -> Result<Vec<Row>, String> {
    let reads = [
        Read::ById,
        Read::ByIdentifier,
        Read::ObservationsByPatientCode,
    ];
    if ctx.args.external.is_some()
        || !reads
            .iter()
            .any(|r| ctx.wanted(&format!("{}, authenticated", r.name())))
    {
        return Ok(vec![]);
    }
    let mut admin = PgConnection::establish(&ctx.args.database_url)
        .map_err(|e| format!("connecting to the benchmark database: {e}"))?;
    let secret = register_client(ctx, &mut admin)?;
    let listen = next_port(&ctx.args.listen)?;
    let log = ctx.args.gateway_log.with_extension("auth.log");
    say("starting a second gateway with authentication required");
    let secured = gateway::Gateway::start(
        &ctx.args.gateway,
        &ctx.args.database_url,
        &listen,
        ctx.args.pool_size,
        &bench_mappings(),
        &log,
        true,
    )?;
    let root = secured.base.trim_end_matches("/fhir").to_string();
    let token = access_token(&root, &secret)?;
    let bearer = format!("Bearer {token}");
    let authed = move |_: usize| -> Result<reqwest::blocking::Client, String> {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::AUTHORIZATION,
            bearer.parse().map_err(|_| "bad token header".to_string())?,
        );
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .default_headers(h)
            .build()
            .map_err(|e| e.to_string())
    };
    let pick = move || rand::thread_rng().gen_range(1..=scale);
    let mut rows = Vec::new();
    for read in reads {
        let name: &'static str = match read {
            Read::ById => "read Patient by id, authenticated",
            Read::ByIdentifier => "search Patient by identifier, authenticated",
            _ => "search Observation by patient+code, authenticated",
        };
        if !ctx.wanted(name) {
            continue;
        }
        let mut open = Vec::new();
        let mut closed = Vec::new();
        // A B B A …: the order within a pair alternates, so that a machine drifting one way over
        // the run favours neither side.
        for round in 1..=ctx.args.auth_rounds.max(1) {
            for token_side in [round % 2 == 0, round % 2 == 1] {
                if token_side {
                    say(format!(
                        "{name} at {scale} people: with a token, round {round}"
                    ));
                    closed.push(load::run_metered(
                        ctx.args.clients,
                        ctx.warmup(),
                        ctx.duration(),
                        &authed,
                        |c, _, _| get(c, &read.url(&secured.base, pick()), JSON).map(|_| 1),
                        Some(&|| cpu::server_seconds(secured.pid())),
                    )?);
                } else {
                    say(format!(
                        "{name} at {scale} people: development mode, round {round}"
                    ));
                    let open_pid = ctx.gateway.as_ref().map_or(0, |g| g.pid());
                    open.push(load::run_metered(
                        ctx.args.clients,
                        ctx.warmup(),
                        ctx.duration(),
                        http_client,
                        |c, _, _| get(c, &read.url(&ctx.base, pick()), JSON).map(|_| 1),
                        Some(&|| cpu::server_seconds(open_pid)),
                    )?);
                }
            }
            // Each pair's ratio too: the drift of a shared machine shows as their spread.
            if let (Some(a), Some(b)) = (open.last(), closed.last()) {
                let cpu = b.server_cpu_ratio(a).map_or(String::new(), |(ratio, detail)| {
                    format!("; server CPU per request, token ÷ development mode {ratio:.2}× ({detail})")
                });
                say(format!(
                    "{name}, round {round}: development mode {:.0}/s, token {:.0}/s ({:.2}×){cpu}",
                    a.units_per_s,
                    b.units_per_s,
                    a.units_per_s / b.units_per_s.max(f64::MIN_POSITIVE)
                ));
            }
        }
        rows.push(Row::new(
            name,
            "auth",
            Some(scale),
            "json",
            Stats::merge(&closed),
            Some(Stats::merge(&open)),
        ));
    }
    Ok(rows)
}

fn post(c: &reqwest::blocking::Client, url: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let r = c
        .post(url)
        .header("Content-Type", JSON)
        .header("Accept", JSON)
        .body(body)
        .send()
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = r.status();
    let body = r.bytes().map_err(|e| format!("POST {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "POST {url}: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(800)])
        ));
    }
    Ok(body.to_vec())
}

fn write_scenarios(ctx: &Ctx, scale: u64) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    if ctx.wanted("create Patient") {
        let on = create_patient(ctx, scale)?;
        if ctx.gateway.is_some() {
            // The same creates with matching on write switched off, to price matching.
            set_linking(ctx, false)?;
            let off = create_patient_gateway(ctx, "GO");
            set_linking(ctx, true)?;
            rows.push(Row::new(
                "create Patient, matching off",
                "write",
                Some(scale),
                "json",
                off?,
                on.raw.clone(),
            ));
        }
        rows.insert(0, on);
    }
    if ctx.wanted("transaction Bundle ingest") {
        rows.push(bundle_ingest(ctx, scale)?);
    }
    Ok(rows)
}

/// A tag unique to this run, in every national ID the write scenarios make, so that runs against
/// the same database (`--external`) never collide on a unique identifier.
fn run_tag() -> String {
    let mut rng = rand::thread_rng();
    let mut letter = || (b'A' + rng.gen_range(0..26u8)) as char;
    format!("{}{}{}", letter(), letter(), letter())
}

fn create_patient(ctx: &Ctx, scale: u64) -> Result<Row, String> {
    let tag = run_tag();
    let ids = &ctx.ids;
    let facilities = ids.facilities.len();
    say("create Patient: raw");
    let raw = load::run(
        ctx.args.clients,
        ctx.warmup(),
        ctx.duration(),
        |_| Ok(()),
        |_, t, seq| {
            let p = gen::person(&format!("RC{tag}"), t, seq, facilities);
            raw::write(&ctx.pool, ids, &[p], false, 'r')
        },
    )?;
    let gw = create_patient_gateway(ctx, "GC")?;
    Ok(Row::new(
        "create Patient",
        "write",
        Some(scale),
        "json",
        gw,
        Some(raw),
    ))
}

/// Patients created through the gateway by the read clients, each with a new national ID.
fn create_patient_gateway(ctx: &Ctx, prefix: &str) -> Result<Stats, String> {
    let tag = format!("{prefix}{}", run_tag());
    let ids = &ctx.ids;
    let facilities = ids.facilities.len();
    say(format!("create Patient: gateway ({prefix})"));
    let url = format!("{}/Patient", ctx.base);
    load::run(
        ctx.args.clients,
        ctx.warmup(),
        ctx.duration(),
        http_client,
        |c, t, seq| {
            let p = gen::person(&tag, t, seq, facilities);
            let body = gen::patient(&p, &ids.facility_uids[p.facility]).to_string();
            post(c, &url, body.into_bytes()).map(|_| 1)
        },
    )
}

fn bundle_ingest(ctx: &Ctx, scale: u64) -> Result<Row, String> {
    let tag = run_tag();
    let ids = &ctx.ids;
    let facilities = ids.facilities.len();
    let people = ctx.args.bundle_people;
    let batch = |tag: &str, t: usize, seq: u64| -> Vec<gen::Person> {
        (0..people)
            .map(|k| gen::person(tag, t, seq * people as u64 + k as u64, facilities))
            .collect()
    };
    say("transaction Bundle ingest: raw");
    let raw = load::run(
        ctx.args.bundle_clients,
        ctx.warmup(),
        ctx.duration(),
        |_| Ok(()),
        |_, t, seq| {
            raw::write(
                &ctx.pool,
                ids,
                &batch(&format!("RB{tag}"), t, seq),
                true,
                'q',
            )
        },
    )?;
    say("transaction Bundle ingest: gateway");
    let created = AtomicU64::new(0);
    let gw = load::run(
        ctx.args.bundle_clients,
        ctx.warmup(),
        ctx.duration(),
        http_client,
        |c, t, seq| {
            let people = batch(&format!("GB{tag}"), t, seq);
            let n = (people.len() * (2 + gen::VITALS.len())) as u64;
            let body = gen::transaction_body(&people, &ids.facility_uids);
            let answer = post(c, &ctx.base, body.into_bytes())?;
            if seq == 0 {
                // Once per client: every entry must have been created.
                let v: Value = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
                let ok = v["entry"].as_array().map_or(0, |es| {
                    es.iter()
                        .filter(|e| {
                            e["response"]["status"]
                                .as_str()
                                .is_some_and(|s| s.starts_with("201"))
                        })
                        .count()
                });
                if ok as u64 != n {
                    return Err(format!("transaction Bundle: {ok} of {n} entries created"));
                }
                created.fetch_add(ok as u64, Ordering::Relaxed);
            }
            Ok(n)
        },
    )?;
    Ok(Row::new(
        "transaction Bundle ingest",
        "write",
        Some(scale),
        "json",
        gw,
        Some(raw),
    ))
}
