//! `make bench-outbound`: what outbound push costs and how fast it drains, against the OpenMRS
//! double (`kiunga-doubles`) answering after a fixed latency, in this process.
//!
//! 1. **Cost to inbound writes**: Patient create, 8 clients, by gateways over one database, with
//!    the OpenMRS target enabled (every create also queues an outbox item) or without targets;
//!    a fresh gateway process per round, the order alternating, matching on write off on both
//!    sides. Delivery is off (`KIUNGA_OUTBOX_WORKERS=false`): this is the price of the outbox in
//!    the write path.
//! 2. **Drain**: a backlog of transaction Bundles (each 100 people × 1 Encounter × 5 Observations:
//!    700 items) is queued with delivery off, then one `kiunga worker` delivers it. Throughput in
//!    records per second at the target's latency and concurrency; the worker's memory sampled as
//!    the backlog drains.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use kiunga_doubles::openmrs::{Config as OpenMrsConfig, OpenMrs};
use serde_json::{json, Value};

use crate::gateway::{proc_status_kib, Gateway};
use crate::load::{self, Stats};
use crate::{gen, population::Ids, say, Args};

pub struct Settings {
    pub backlog: u64,
    pub latency_ms: u64,
    pub concurrency: usize,
    pub rounds: usize,
}

fn count(conn: &mut PgConnection, status: &str) -> Result<i64, String> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(format!(
        "SELECT count(*) AS n FROM outbox_item WHERE status = '{status}'"
    ))
    .get_result::<N>(conn)
    .map(|r| r.n)
    .map_err(|e| format!("counting the outbox: {e}"))
}

/// Matching on write off: its candidate look-ups grow with every person the rounds add and made
/// an A/A control (both sides without targets) differ by 1.18×, hiding the outbox's cost. What
/// matching costs is `make bench`'s "create Patient, matching off" row.
fn without_matching(dir: &Path) -> Result<(), String> {
    let file = dir.join("matching.toml");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    if !text.contains("on_write = true") {
        return Err(format!(
            "{}: no `on_write = true` to switch off",
            file.display()
        ));
    }
    std::fs::write(&file, text.replace("on_write = true", "on_write = false"))
        .map_err(|e| format!("{}: {e}", file.display()))
}

fn mappings_with_target(
    base: &Path,
    double: &OpenMrs,
    concurrency: usize,
) -> Result<PathBuf, String> {
    let dir = base.join("outbound-on");
    crate::copy_mappings(&dir)?;
    without_matching(&dir)?;
    let file = dir.join("targets/openmrs.toml");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let text = text
        .replace(
            "url_env = \"KIUNGA_OPENMRS_URL\"",
            &format!("url = \"{}\"", double.base()),
        )
        .replace("concurrency = 4", &format!("concurrency = {concurrency}"));
    std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    // The OpenCRVS demo target stays disabled (its URL variable is not set).
    Ok(dir)
}

fn mappings_without_targets(base: &Path) -> Result<PathBuf, String> {
    let dir = base.join("outbound-off");
    crate::copy_mappings(&dir)?;
    without_matching(&dir)?;
    std::fs::remove_dir_all(dir.join("targets")).map_err(|e| format!("removing targets: {e}"))?;
    Ok(dir)
}

fn creds(cmd: &mut Command) {
    cmd.env("KIUNGA_OPENMRS_USER", "admin")
        .env("KIUNGA_OPENMRS_PASSWORD", "Admin123")
        .env("KIUNGA_OUTBOX_WORKERS", "false");
}

fn create_round(base: &str, ids: &Ids, args: &Args, tag: &str) -> Result<Stats, String> {
    let url = format!("{base}/Patient");
    let facilities = ids.facilities.len();
    load::run(
        args.clients,
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.duration),
        crate::http_client,
        |c, t, seq| {
            let p = gen::person(tag, t, seq, facilities);
            let body = gen::patient(&p, &ids.facility_uids[p.facility]).to_string();
            crate::post(c, &url, body.into_bytes()).map(|_| 1)
        },
    )
}

pub fn run(args: &Args, s: &Settings) -> Result<Value, String> {
    let mut admin = PgConnection::establish(&args.database_url)
        .map_err(|e| format!("connecting to the benchmark database: {e}"))?;
    say("outbound: wiping the benchmark database");
    diesel::sql_query("DROP SCHEMA IF EXISTS public CASCADE")
        .execute(&mut admin)
        .and_then(|_| diesel::sql_query("CREATE SCHEMA public").execute(&mut admin))
        .map_err(|e| format!("wiping the benchmark database: {e}"))?;
    let double =
        OpenMrs::start(OpenMrsConfig::demo()).map_err(|e| format!("the OpenMRS double: {e}"))?;
    double
        .faults
        .set_latency(Duration::from_millis(s.latency_ms));
    let work = PathBuf::from("target/bench");
    let on_maps = mappings_with_target(&work, &double, s.concurrency)?;
    let off_maps = mappings_without_targets(&work)?;
    // KIUNGA_BENCH_CONTROL=1: both sides without targets (an A/A run, to see the noise).
    let control = std::env::var("KIUNGA_BENCH_CONTROL").is_ok_and(|v| v == "1");
    // Each round gets a freshly started gateway: one process's create latency drifted from 22 to
    // 66 ms over 35 s while its twin's stayed at 15 (an A/A control, both without targets;
    // matching on write dominated), so sides run in processes of the same age. The order
    // alternates: on, off; off, on; …
    let start = |with_target: bool, log: &str| {
        Gateway::start_with(
            &args.gateway,
            &args.database_url,
            &args.listen,
            args.pool_size,
            if with_target && !control {
                &on_maps
            } else {
                &off_maps
            },
            &work.join(log),
            false,
            creds,
        )
    };
    say("outbound: one unmeasured round first (the first writes into a fresh database are slower)");
    let ids = {
        let g = start(false, "gateway-outbound-warmup.log")?;
        // The gateway has migrated the database and loaded the demo metadata by now.
        let ids = Ids::load(&mut admin)?;
        create_round(&g.base, &ids, args, "WA")?;
        ids
    };
    let mut on_rounds = Vec::new();
    let mut off_rounds = Vec::new();
    for r in 0..s.rounds {
        for on_side in if r % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            let g = start(
                on_side,
                if on_side {
                    "gateway-outbound-on.log"
                } else {
                    "gateway-outbound-off.log"
                },
            )?;
            if on_side {
                say(format!(
                    "outbound: Patient create with the target on, round {}",
                    r + 1
                ));
                on_rounds.push(create_round(&g.base, &ids, args, &format!("ON{r}"))?);
            } else {
                say(format!(
                    "outbound: Patient create without targets, round {}",
                    r + 1
                ));
                off_rounds.push(create_round(&g.base, &ids, args, &format!("OF{r}"))?);
            }
        }
    }
    // The gateway that queues the backlog must be the one with the target (it writes the rules).
    let on = start(true, "gateway-outbound-backlog.log")?;
    let (on_s, off_s) = (Stats::merge(&on_rounds), Stats::merge(&off_rounds));
    // Every create on the gateway with the target queued one item (warm-up creates included).
    let queued_by_creates = count(&mut admin, "pending")?;
    if control {
        return Ok(json!({ "control": { "a": on_s, "b": off_s } }));
    }
    if (queued_by_creates as u64) < on_s.ops {
        return Err(format!(
            "the gateway with the target queued {queued_by_creates} items for {} creates",
            on_s.ops
        ));
    }
    // The creates' items are not part of the drain: set aside, so that the backlog is Bundles only.
    diesel::sql_query(
        "UPDATE outbox_item SET status = 'skipped', error_kind = 'bench' WHERE status = 'pending'",
    )
    .execute(&mut admin)
    .map_err(|e| e.to_string())?;

    say(format!(
        "outbound: queueing a backlog of {} items (transaction Bundles)",
        s.backlog
    ));
    let url = on.base.clone();
    let facilities = ids.facilities.len();
    let people = 100usize;
    let per_bundle = people as u64 * 7;
    let bundles = s.backlog.div_ceil(per_bundle);
    let client = crate::http_client(0)?;
    let started = Instant::now();
    for b in 0..bundles {
        let batch: Vec<gen::Person> = (0..people)
            .map(|k| gen::person("BL", 0, b * people as u64 + k as u64, facilities))
            .collect();
        let body = gen::transaction(&batch, &ids.facility_uids).to_string();
        crate::post(&client, &url, body.into_bytes())?;
    }
    let backlog = count(&mut admin, "pending")?;
    say(format!(
        "  {backlog} items queued in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    drop(on);

    say(format!(
        "outbound: draining with `kiunga worker` (concurrency {}, target latency {} ms)",
        s.concurrency, s.latency_ms
    ));
    let mut worker = spawn_worker(args, &on_maps, &work.join("worker-outbound.log"))?;
    let t0 = Instant::now();
    let mut samples: Vec<(f64, i64, f64)> = Vec::new(); // (seconds, delivered, RSS MiB)
    let limit = Duration::from_secs(3600);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let delivered = count(&mut admin, "delivered")?;
        let rss = proc_status_kib(worker.id(), "VmRSS:").unwrap_or(0) as f64 / 1024.0;
        samples.push((t0.elapsed().as_secs_f64(), delivered, rss));
        let pending = count(&mut admin, "pending")?;
        if pending == 0 || t0.elapsed() > limit {
            break;
        }
        if let Ok(Some(status)) = worker.try_wait() {
            return Err(format!("the worker exited ({status})"));
        }
    }
    let peak = proc_status_kib(worker.id(), "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    let _ = worker.kill();
    let _ = worker.wait();
    let dead = count(&mut admin, "dead")? + count(&mut admin, "unknown")?;
    let delivered = count(&mut admin, "delivered")?;
    // Steady-state throughput: from 10 % to 90 % of the backlog delivered.
    let at = |frac: f64| {
        samples
            .iter()
            .find(|(_, d, _)| *d as f64 >= frac * backlog as f64)
            .copied()
    };
    let (a, b) = (at(0.1), at(0.9));
    let per_s = match (a, b) {
        (Some((ta, da, _)), Some((tb, db, _))) if tb > ta => (db - da) as f64 / (tb - ta),
        _ => delivered as f64 / t0.elapsed().as_secs_f64(),
    };
    let rss_at = |frac: f64| at(frac).map(|(_, _, r)| r);
    let ceiling = s.concurrency as f64 / (s.latency_ms as f64 / 1000.0);
    let ratio = on_s.ops_per_s / off_s.ops_per_s.max(1e-9);
    let report = json!({
        "machine": crate::report::machine(),
        "create_patient": {
            "clients": args.clients,
            "rounds": s.rounds,
            "targets_on": on_s,
            "targets_off": off_s,
            "off_over_on": 1.0 / ratio,
            "target": "off ÷ on ≤ 1.1 (the outbox costs at most 10 % of create throughput)",
            "met": 1.0 / ratio <= 1.1
        },
        "drain": {
            "backlog_items": backlog,
            "delivered": delivered,
            "dead_or_unknown": dead,
            "target_latency_ms": s.latency_ms,
            "concurrency": s.concurrency,
            "records_per_s": per_s,
            "ceiling_records_per_s": ceiling,
            "seconds": t0.elapsed().as_secs_f64(),
            "rss_mib_at_10_50_90_percent": [rss_at(0.1), rss_at(0.5), rss_at(0.9)],
            "peak_rss_mib": peak,
            "on_the_target": {
                "patients": double.patients().len(),
                "encounters": double.encounters().len(),
                "observations": double.observations().len()
            }
        }
    });
    println!(
        "\nOutbound push (make bench-outbound), {} ({} cores)",
        crate::report::machine()["cpu"].as_str().unwrap_or("?"),
        crate::report::machine()["cores"]
    );
    println!(
        "  Patient create, {} clients: targets on {:.0}/s (p50 {:.1} ms), off {:.0}/s (p50 {:.1} ms): off ÷ on = {:.3} (target ≤ 1.1: {})",
        args.clients,
        on_s.ops_per_s,
        on_s.p50_ms,
        off_s.ops_per_s,
        off_s.p50_ms,
        1.0 / ratio,
        if 1.0 / ratio <= 1.1 { "met" } else { "MISSED" }
    );
    println!(
        "  Drain of {backlog} items at {} ms target latency, concurrency {}: {:.0} records/s (ceiling {:.0}); {delivered} delivered, {dead} dead/unknown, {:.0} s",
        s.latency_ms,
        s.concurrency,
        per_s,
        ceiling,
        t0.elapsed().as_secs_f64()
    );
    println!(
        "  Worker RSS at 10/50/90 % drained: {:?} MiB, peak {:.1} MiB",
        [rss_at(0.1), rss_at(0.5), rss_at(0.9)],
        peak
    );
    Ok(report)
}

fn spawn_worker(args: &Args, maps: &Path, log: &Path) -> Result<Child, String> {
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Command::new(&args.gateway);
    cmd.arg("worker")
        .env("KIUNGA_DATABASE_URL", &args.database_url)
        .env("KIUNGA_MAPPINGS_DIR", maps)
        .env("KIUNGA_POOL_SIZE", args.pool_size.to_string())
        .env("KIUNGA_LOG", "warn");
    creds(&mut cmd);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .map_err(|e| format!("starting the worker: {e}"))
}
