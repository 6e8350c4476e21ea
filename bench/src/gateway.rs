//! The gateway under test: a child process of the benchmark, so that its memory can be read from
//! /proc and it is stopped whatever happens to the run.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Gateway {
    child: Child,
    pub base: String,
}

impl Gateway {
    /// Starts a gateway. With `auth`, as production runs it (authentication required, a client's
    /// scopes applied), but with rate limits out of reach and hour-long tokens, so that the run
    /// measures what authentication and scope filtering cost and not a 429; without, in
    /// development mode (`KIUNGA_AUTH=off`), which every other scenario uses.
    pub fn start(
        binary: &Path,
        database_url: &str,
        listen: &str,
        pool_size: u32,
        mappings: &Path,
        log: &Path,
        auth: bool,
    ) -> Result<Gateway, String> {
        Self::start_with(
            binary,
            database_url,
            listen,
            pool_size,
            mappings,
            log,
            auth,
            |_| {},
        )
    }

    /// [`Gateway::start`] with more of the environment set by `more` (the outbound bench's
    /// target credentials).
    #[allow(clippy::too_many_arguments)]
    pub fn start_with(
        binary: &Path,
        database_url: &str,
        listen: &str,
        pool_size: u32,
        mappings: &Path,
        log: &Path,
        auth: bool,
        more: impl FnOnce(&mut Command),
    ) -> Result<Gateway, String> {
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(binary);
        cmd.arg("serve");
        if auth {
            cmd.env("KIUNGA_AUTH", "required")
                .env("KIUNGA_RATE_LIMIT", "1000000")
                .env("KIUNGA_RATE_LIMIT_BURST", "1000000")
                .env("KIUNGA_TOKEN_SECONDS", "3600");
        } else {
            cmd.env("KIUNGA_AUTH", "off");
        }
        more(&mut cmd);
        let child = cmd
            .env("KIUNGA_DATABASE_URL", database_url)
            .env("KIUNGA_LISTEN", listen)
            .env("KIUNGA_POOL_SIZE", pool_size.to_string())
            .env("KIUNGA_MAPPINGS_DIR", mappings)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let mut g = Gateway {
            child,
            base: format!("http://{listen}/fhir"),
        };
        let ready = format!("http://{listen}/readyz");
        let client = reqwest::blocking::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = g.child.try_wait() {
                return Err(format!(
                    "the gateway exited ({status}) before it was ready; see {}",
                    log.display()
                ));
            }
            if client
                .get(&ready)
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(g);
            }
            if start.elapsed() > Duration::from_secs(180) {
                g.stop();
                return Err(format!(
                    "the gateway was not ready within 180 s; see {}",
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Asks the gateway to reload its mapping files (SIGHUP), as an operator would.
    pub fn reload_mappings(&self) -> Result<(), String> {
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .map_err(|e| format!("kill -HUP: {e}"))?
            .success();
        if ok {
            Ok(())
        } else {
            Err("kill -HUP failed".into())
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        proc_status_kib(self.pid(), "VmHWM:").map(|k| k as f64 / 1024.0)
    }

    pub fn rss_mib(&self) -> Option<f64> {
        proc_status_kib(self.pid(), "VmRSS:").map(|k| k as f64 / 1024.0)
    }

    pub fn stop(&mut self) {
        // SIGTERM first so the gateway drains; SIGKILL if it does not go.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
