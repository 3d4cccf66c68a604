//! A process's resident memory and CPU time, read from `/proc`, alone or with
//! every process descended from it (PostgreSQL forks a backend per connection).
//! Linux only, which is where the servers under test run. Owns no process: it
//! only reads.

use anyhow::Context;
use std::time::Duration;

/// Reads the memory and CPU counters of one process.
#[derive(Debug, Clone)]
pub struct ProcStats {
    /// `/proc/<pid>` or `/proc/self`.
    dir: String,
    /// Clock ticks per second of `utime`/`stime`.
    ticks_per_sec: u64,
    /// Count the CPU time of every descendant too, living or reaped.
    tree: bool,
}

impl ProcStats {
    /// The counters of process `pid`.
    pub fn of(pid: u32) -> Self {
        Self {
            dir: format!("/proc/{pid}"),
            ticks_per_sec: clock_ticks(),
            tree: false,
        }
    }

    /// The counters of process `pid` and all its descendants: [`cpu_time`]
    /// sums them (the living ones' own time, and the time of those already
    /// reaped), [`rss_bytes`] stays the root's own.
    ///
    /// [`cpu_time`]: ProcStats::cpu_time
    /// [`rss_bytes`]: ProcStats::rss_bytes
    pub fn tree(pid: u32) -> Self {
        Self {
            tree: true,
            ..Self::of(pid)
        }
    }

    /// The counters of this process (all its threads).
    pub fn current() -> Self {
        Self {
            dir: "/proc/self".into(),
            ticks_per_sec: clock_ticks(),
            tree: false,
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

    /// User plus system CPU time of every thread of the process so far (with
    /// [`ProcStats::tree`], of its descendants too).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("{}/stat", self.dir))
            .with_context(|| format!("reading {}/stat", self.dir))?;
        let own = StatLine::parse(&stat).context("malformed stat")?;
        let mut ticks = own.utime + own.stime;
        if self.tree {
            // The root's children already reaped, then every living descendant
            // (whose own reaped children are in its `cutime`, and gone from
            // the process table).
            ticks += own.cutime + own.cstime;
            let all = all_processes();
            for p in descendants_in(&all, own.pid) {
                ticks += p.utime + p.stime + p.cutime + p.cstime;
            }
        }
        Ok(Duration::from_micros(
            ticks * 1_000_000 / self.ticks_per_sec,
        ))
    }
}

/// What the scenarios need of one `/proc/<pid>/stat` line.
#[derive(Debug, Clone, Copy)]
struct StatLine {
    pid: u32,
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

impl StatLine {
    fn parse(stat: &str) -> Option<StatLine> {
        let pid = stat.split_whitespace().next()?.parse().ok()?;
        // The command name (field 2) may contain spaces and parentheses: count
        // fields from the last ')'.
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state is field 3, ppid 4, utime 14, stime 15, cutime
        // 16 and cstime 17 (1-based), so indices 0, 1, 11, 12, 13, 14 here.
        let field = |i: usize| -> Option<u64> { fields.get(i)?.parse().ok() };
        Some(StatLine {
            pid,
            ppid: u32::try_from(field(1)?).ok()?,
            utime: field(11)?,
            stime: field(12)?,
            // Signed in the kernel, never negative in practice.
            cutime: fields.get(13)?.parse::<i64>().ok()?.max(0) as u64,
            cstime: fields.get(14)?.parse::<i64>().ok()?.max(0) as u64,
        })
    }
}

/// Every process's stat line that can be read now (processes come and go).
fn all_processes() -> Vec<StatLine> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| StatLine::parse(&s))
        .collect()
}

/// The process ids of `root`'s descendants now.
pub fn descendants(root: u32) -> Vec<u32> {
    descendants_in(&all_processes(), root)
        .map(|p| p.pid)
        .collect()
}

/// `root`'s descendants among `all`.
fn descendants_in(all: &[StatLine], root: u32) -> impl Iterator<Item = &StatLine> {
    let mut stack = vec![root];
    let mut found = Vec::new();
    while let Some(parent) = stack.pop() {
        for p in all.iter().filter(|p| p.ppid == parent) {
            found.push(p);
            stack.push(p.pid);
        }
    }
    found.into_iter()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_odd_command_names() {
        let line = "4242 (post gres: (x)) S 17 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 30 7 3 20 0 1 0 100 1000 10 18446744073709551615";
        let s = StatLine::parse(line).expect("parses");
        assert_eq!((s.pid, s.ppid), (4242, 17));
        assert_eq!((s.utime, s.stime, s.cutime, s.cstime), (250, 30, 7, 3));
        assert!(StatLine::parse("1 (x) S").is_none());
    }

    #[test]
    fn a_tree_counts_at_least_its_root() {
        let me = std::process::id();
        let own = ProcStats::of(me).cpu_time().expect("own stat");
        let tree = ProcStats::tree(me).cpu_time().expect("tree stat");
        assert!(tree >= own, "{tree:?} < {own:?}");
        assert!(!descendants(1).is_empty() || me == 1);
    }
}
