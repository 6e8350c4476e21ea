//! The load generator: N client threads run one operation in a closed loop for a fixed time, and
//! every operation's latency is kept so that percentiles are exact, not bucketed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What one operation did: how many resources (or logical records) it carried.
pub type OpResult = Result<u64, String>;

/// Figures of one run (one side of one scenario).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub clients: usize,
    pub seconds: f64,
    pub ops: u64,
    /// Resources carried (1 per op for single-resource scenarios, 700 per transaction Bundle).
    pub units: u64,
    pub ops_per_s: f64,
    pub units_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Server CPU seconds over the measured time, gateway and Postgres apart, when metered.
    pub server_cpu_s: Option<[f64; 2]>,
}

impl Stats {
    /// Rounds of one side taken together: throughput over the rounds' total time, percentiles the
    /// mean of the rounds' (the latencies themselves are not kept across rounds).
    pub fn merge(rounds: &[Stats]) -> Stats {
        let n = rounds.len().max(1) as f64;
        let seconds: f64 = rounds.iter().map(|r| r.seconds).sum();
        let ops: u64 = rounds.iter().map(|r| r.ops).sum();
        let units: u64 = rounds.iter().map(|r| r.units).sum();
        let per_s = |x: u64| {
            if seconds > 0.0 {
                x as f64 / seconds
            } else {
                0.0
            }
        };
        Stats {
            clients: rounds.first().map_or(0, |r| r.clients),
            seconds,
            ops,
            units,
            ops_per_s: per_s(ops),
            units_per_s: per_s(units),
            p50_ms: rounds.iter().map(|r| r.p50_ms).sum::<f64>() / n,
            p95_ms: rounds.iter().map(|r| r.p95_ms).sum::<f64>() / n,
            p99_ms: rounds.iter().map(|r| r.p99_ms).sum::<f64>() / n,
            max_ms: rounds.iter().map(|r| r.max_ms).fold(0.0, f64::max),
            server_cpu_s: rounds.iter().try_fold([0.0; 2], |acc, r| {
                r.server_cpu_s.map(|[g, p]| [acc[0] + g, acc[1] + p])
            }),
        }
    }

    /// Server CPU milliseconds per operation, gateway and Postgres apart, when metered.
    pub fn server_cpu_ms_per_op(&self) -> Option<[f64; 2]> {
        self.server_cpu_s
            .filter(|_| self.ops > 0)
            .map(|s| s.map(|x| x * 1000.0 / self.ops as f64))
    }

    /// Server CPU per operation here ÷ in `base`, with the figures behind it, when both were
    /// metered.
    pub fn server_cpu_ratio(&self, base: &Stats) -> Option<(f64, String)> {
        let ([bg, bp], [g, p]) = (base.server_cpu_ms_per_op()?, self.server_cpu_ms_per_op()?);
        (bg + bp > 0.0).then(|| {
            (
                (g + p) / (bg + bp),
                format!(
                    "{:.3} / {:.3} ms; gateway {g:.3} / {bg:.3}, Postgres {p:.3} / {bp:.3}",
                    g + p,
                    bg + bp
                ),
            )
        })
    }
}

fn note_failure(slot: &Mutex<Option<String>>, e: String) {
    if let Ok(mut f) = slot.lock() {
        f.get_or_insert(e);
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// Runs `op` from `clients` threads: `warmup` first (not counted), then `duration` measured.
/// `make_client(i)` builds each thread's own state (an HTTP client, a database connection...), so
/// threads share nothing but the clock. The first failure stops the run and is returned: a
/// benchmark that counts errors as work would report nonsense.
pub fn run<C, M, O>(
    clients: usize,
    warmup: Duration,
    duration: Duration,
    make_client: M,
    op: O,
) -> Result<Stats, String>
where
    M: Fn(usize) -> Result<C, String> + Sync,
    O: Fn(&mut C, usize, u64) -> OpResult + Sync,
{
    run_metered(clients, warmup, duration, make_client, op, None)
}

/// [`run`], reading `meter` (seconds of CPU so far, two counters) when the measured time starts
/// and ends.
pub fn run_metered<C, M, O>(
    clients: usize,
    warmup: Duration,
    duration: Duration,
    make_client: M,
    op: O,
    meter: Option<&dyn Fn() -> [f64; 2]>,
) -> Result<Stats, String>
where
    M: Fn(usize) -> Result<C, String> + Sync,
    O: Fn(&mut C, usize, u64) -> OpResult + Sync,
{
    let mut cpu = None;
    let stop = AtomicBool::new(false);
    let measuring = AtomicBool::new(false);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let results: Mutex<Vec<(Vec<u64>, u64)>> = Mutex::new(Vec::new());
    let mut measured = Duration::ZERO;
    std::thread::scope(|scope| {
        for t in 0..clients {
            let (barrier, stop, measuring, failure, results) =
                (barrier.clone(), &stop, &measuring, &failure, &results);
            let (make_client, op) = (&make_client, &op);
            scope.spawn(move || {
                let client = make_client(t);
                barrier.wait();
                let mut client = match client {
                    Ok(c) => c,
                    Err(e) => {
                        note_failure(failure, e);
                        stop.store(true, Ordering::SeqCst);
                        return;
                    }
                };
                let mut lat = Vec::with_capacity(1 << 16);
                let (mut units, mut seq) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let counted = measuring.load(Ordering::Relaxed);
                    let start = Instant::now();
                    match op(&mut client, t, seq) {
                        Ok(n) => {
                            if counted && !stop.load(Ordering::Relaxed) {
                                lat.push(start.elapsed().as_micros() as u64);
                                units += n;
                            }
                        }
                        Err(e) => {
                            note_failure(failure, e);
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                    seq += 1;
                }
                results.lock().map(|mut r| r.push((lat, units))).ok();
            });
        }
        barrier.wait();
        std::thread::sleep(warmup);
        let cpu_start = meter.map(|m| m());
        measuring.store(true, Ordering::SeqCst);
        let start = Instant::now();
        while start.elapsed() < duration && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::SeqCst);
        measured = start.elapsed();
        cpu = meter.zip(cpu_start).map(|(m, s)| {
            let e = m();
            [e[0] - s[0], e[1] - s[1]]
        });
    });
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut all = Vec::new();
    let mut units = 0;
    for (lat, u) in results
        .into_inner()
        .map_err(|_| "a client thread panicked")?
    {
        all.extend(lat);
        units += u;
    }
    all.sort_unstable();
    let secs = measured.as_secs_f64();
    if all.is_empty() {
        return Err(format!(
            "no operation completed within {secs:.1} s; raise --duration"
        ));
    }
    Ok(Stats {
        clients,
        seconds: secs,
        ops: all.len() as u64,
        units,
        ops_per_s: all.len() as f64 / secs,
        units_per_s: units as f64 / secs,
        p50_ms: percentile(&all, 50.0),
        p95_ms: percentile(&all, 95.0),
        p99_ms: percentile(&all, 99.0),
        max_ms: percentile(&all, 100.0),
        server_cpu_s: cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7000], 95.0), 7.0);
    }

    /// Rounds merged add their CPU and operations; the ratio is per operation, and there is none
    /// when a side was not metered.
    #[test]
    fn server_cpu_is_compared_per_operation() {
        let side = |ops: u64, cpu: Option<[f64; 2]>| Stats {
            clients: 1,
            seconds: 1.0,
            ops,
            units: ops,
            ops_per_s: ops as f64,
            units_per_s: ops as f64,
            p50_ms: 1.0,
            p95_ms: 1.0,
            p99_ms: 1.0,
            max_ms: 1.0,
            server_cpu_s: cpu,
        };
        let base = Stats::merge(&[side(500, Some([0.2, 0.1])), side(500, Some([0.2, 0.1]))]);
        let other = side(1000, Some([0.36, 0.3]));
        let (ratio, detail) = other.server_cpu_ratio(&base).expect("both metered");
        assert!((ratio - 1.1).abs() < 1e-9, "{ratio}");
        assert_eq!(
            detail,
            "0.660 / 0.600 ms; gateway 0.360 / 0.400, Postgres 0.300 / 0.200"
        );
        assert!(side(10, None).server_cpu_ratio(&base).is_none());
        assert!(Stats::merge(&[side(1, None), side(1, Some([1.0, 1.0]))])
            .server_cpu_s
            .is_none());
    }

    #[test]
    fn a_failing_operation_fails_the_run() {
        let r = run(
            2,
            Duration::ZERO,
            Duration::from_millis(200),
            |_| Ok(()),
            |_, _, seq| if seq > 3 { Err("boom".into()) } else { Ok(1) },
        );
        assert_eq!(r.err().as_deref(), Some("boom"));
    }

    #[test]
    fn counts_units_and_ops() {
        let s = run(
            2,
            Duration::from_millis(10),
            Duration::from_millis(100),
            |_| Ok(()),
            |_, _, _| {
                std::thread::sleep(Duration::from_millis(1));
                Ok(3)
            },
        )
        .expect("run");
        assert!(s.ops > 10, "{s:?}");
        assert_eq!(s.units, s.ops * 3);
        assert!(s.p50_ms >= 1.0, "{s:?}");
    }
}
