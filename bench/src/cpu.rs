//! CPU time spent by the server side of a scenario: the gateway process and every Postgres
//! process on this machine, from /proc. The authentication A/B reports it per request beside
//! throughput, in the hope of a figure that the machine's other tenants do not move; on the
//! shared 2-core machine it moves with throughput, pair by pair (docs/performance.md).

/// Clock ticks per second of /proc's utime and stime (USER_HZ: 100 on every Linux build the
/// bench runs on; /proc reports in it whatever the kernel's own tick rate).
const TICKS_PER_S: f64 = 100.0;

/// utime + stime of one process, in seconds; None when it is gone or unreadable.
fn process_cpu(pid: u32) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the fields after the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // Fields 14 and 15 of the whole line are the 12th and 13th after the command.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_S))
}

/// Seconds of CPU used so far by `gateway` and by every process named `postgres` (backends,
/// writers, autovacuum: all of it is the cost of serving), apart. Differences of two readings
/// are what count; a backend that ends between them takes its share with it, which the bench's
/// pooled connections do not do.
pub fn server_seconds(gateway: u32) -> [f64; 2] {
    let own = process_cpu(gateway).map_or(0.0, |(_, s)| s);
    let postgres: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(process_cpu)
        .filter(|(comm, _)| comm == "postgres")
        .map(|(_, s)| s)
        .sum();
    [own, postgres]
}

#[cfg(test)]
mod tests {
    /// This process's own reading grows when it burns CPU (by the CPU clock, not the wall
    /// clock: on a loaded machine a busy loop may get little of a core).
    #[test]
    fn a_process_that_works_shows_cpu_time() {
        let me = std::process::id();
        let read = || super::process_cpu(me).expect("own /proc stat").1;
        let before = read();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while read() - before < 0.05 && start.elapsed() < std::time::Duration::from_secs(30) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
        }
        let after = read();
        assert!(after - before >= 0.05, "{before} -> {after}");
    }
}
