//! A process's resident memory and CPU time, read from `/proc`. Linux only, which
//! is where the servers under test run. Owns no process: it only reads.

use anyhow::Context;
use std::time::Duration;

/// Reads the memory and CPU counters of one process.
#[derive(Debug, Clone)]
pub struct ProcStats {
    /// `/proc/<pid>` or `/proc/self`.
    dir: String,
    /// Clock ticks per second of `utime`/`stime`.
    ticks_per_sec: u64,
}

impl ProcStats {
    /// The counters of process `pid`.
    pub fn of(pid: u32) -> Self {
        Self {
            dir: format!("/proc/{pid}"),
            ticks_per_sec: clock_ticks(),
        }
    }

    /// The counters of this process (all its threads).
    pub fn current() -> Self {
        Self {
            dir: "/proc/self".into(),
            ticks_per_sec: clock_ticks(),
        }
    }

    /// Resident set size in bytes (`VmRSS`).
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("{}/status", self.dir))
            .with_context(|| format!("reading {}/status", self.dir))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS line")?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("empty VmRSS line")?
            .parse()?;
        Ok(kib * 1024)
    }

    /// User plus system CPU time of every thread of the process so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("{}/stat", self.dir))
            .with_context(|| format!("reading {}/stat", self.dir))?;
        // The command name (field 2) may contain spaces and parentheses: count
        // fields from the last ')'.
        let rest = &stat[stat.rfind(')').context("malformed stat")? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state is field 3, utime 14 and stime 15 (1-based), so
        // indices 11 and 12 here.
        let utime: u64 = fields.get(11).context("no utime")?.parse()?;
        let stime: u64 = fields.get(12).context("no stime")?.parse()?;
        Ok(Duration::from_micros(
            (utime + stime) * 1_000_000 / self.ticks_per_sec,
        ))
    }
}

/// `USER_HZ`. It is 100 on every Linux architecture in use; `getconf` confirms it
/// without `unsafe` (the workspace forbids it, and `sysconf` needs it).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// A CPU-time and wall-clock reading, to turn two of them into a utilisation.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    /// CPU time used so far.
    pub cpu: Duration,
    /// When it was read.
    pub at: std::time::Instant,
}

impl CpuMark {
    /// Reads the process's CPU time now; zero if it cannot be read (the process
    /// has gone), which the caller sees as an implausible result.
    pub fn now(stats: &ProcStats) -> Self {
        Self {
            cpu: stats.cpu_time().unwrap_or_default(),
            at: std::time::Instant::now(),
        }
    }

    /// CPU time used since `earlier`, and the fraction of one core that is.
    pub fn since(&self, earlier: &CpuMark) -> (Duration, f64) {
        let cpu = self.cpu.saturating_sub(earlier.cpu);
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        let util = if wall > 0.0 {
            cpu.as_secs_f64() / wall
        } else {
            0.0
        };
        (cpu, util)
    }
}
