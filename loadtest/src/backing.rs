//! The private servers a cluster shares: a `redis-server` and a PostgreSQL server,
//! each on a free loopback port in a temporary directory of its own, started for
//! one deployment, pinned to the servers' CPUs like the nodes, measured, and
//! stopped by process id at its end. Never a server already running on the
//! machine. It knows nothing of Pitboss or Socket.IO; `cluster` starts the nodes.
//!
//! PostgreSQL is started by the project's own test helper
//! (crates/transcripts/tests/support/private_postgres.rs, std only, included
//! here as it is): Debian's binaries from /usr/lib/postgresql/*/bin, as the
//! `postgres` user through `runuser` when this process is root, trust
//! authentication, `fsync=on`, and a watchdog that removes the directory even if
//! this process is killed. This module adds what a measurement needs: the
//! postmaster's process tree (for its CPU time), `synchronous_commit = on` set
//! on the database (and read back with `fsync`), pinning, and a
//! `pg_ctl stop -m fast` at the end (the postmaster killed by pid if that did
//! not stop it).

use crate::procstat::{self, ProcStats};
use crate::target::{pinned, TargetOptions};
use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// Another crate's file: `cargo fmt -p pitboss-loadtest` must leave it alone.
#[rustfmt::skip]
#[allow(dead_code, unreachable_pub)]
#[path = "../../crates/transcripts/tests/support/private_postgres.rs"]
mod private_postgres;

use private_postgres::PrivatePostgres;

/// What to install when `redis-server` is missing.
const REDIS_MISSING: &str =
    "redis-server not found on PATH: the cluster scenario starts a private \
     Redis. Install it with `apt-get install redis-server` (Debian), or put redis-server on PATH.";

/// How long a fresh server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Ports tried: one found free may be taken before the server binds it.
const START_ATTEMPTS: usize = 5;

/// A private `redis-server`: no persistence, loopback only. Dropping it kills
/// the process by its pid.
pub struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one on a free loopback port (pinned to `--server-cpus`) and waits
    /// until it answers `PING`.
    pub fn start(opts: &TargetOptions) -> anyhow::Result<Redis> {
        let bin = on_path("redis-server").context(REDIS_MISSING)?;
        let dir = tempfile::Builder::new()
            .prefix("pitboss-loadtest-redis")
            .tempdir()?;
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let mut child = pinned(opts, &bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(dir.path().join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting redis-server")?;
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    failures.push(format!("port {port}: exited with {status}"));
                    break;
                }
                if redis_pings(port) {
                    tracing::info!(port, pid = child.id(), "redis-server started");
                    return Ok(Redis { child, port, dir });
                }
                if Instant::now() > deadline {
                    let _ignored = child.kill();
                    let _ignored = child.wait();
                    failures.push(format!("port {port}: no answer to PING"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        bail!(
            "redis-server did not start ({}); its log:\n{}",
            failures.join("; "),
            std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default()
        )
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its CPU counters.
    pub fn stats(&self) -> ProcStats {
        ProcStats::of(self.child.id())
    }

    /// Its log's warnings (`#` lines) and last lines.
    pub fn log_excerpt(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        excerpt(&log, |l| l.contains(" # "))
    }

    /// Kills it by its pid (nothing of it is kept) and reaps it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Err(err) = self.child.kill() {
                tracing::warn!(%err, pid = self.child.id(), "cannot stop redis-server");
            }
        }
        let _ignored = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a Redis on `port` answers `PING` (RESP inline command).
fn redis_pings(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ignored = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// A private PostgreSQL server with one empty database. Stop it with
/// [`Postgres::stop`]; dropping it without leaves the cleanup to the watchdog.
pub struct Postgres {
    server: Option<PrivatePostgres>,
    url: String,
    postmaster: u32,
    data_dir: PathBuf,
    pg_ctl: PathBuf,
    /// `fsync` and `synchronous_commit` as a new session sees them.
    settings: String,
}

impl Postgres {
    /// Starts a server (`initdb`, then `pg_ctl start` on a free loopback port),
    /// sets `synchronous_commit = on`, pins its processes to `--server-cpus`, and
    /// creates the database.
    pub fn start(opts: &TargetOptions) -> anyhow::Result<Postgres> {
        let server = PrivatePostgres::start().map_err(|why| {
            anyhow::anyhow!(
                "cannot start a private PostgreSQL: {why}\n(the cluster scenario needs \
                 Debian's server: apt-get install postgresql)"
            )
        })?;
        // The helper panics when `createdb` fails (a test's way); here that is
        // an error of the run.
        let url =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.create_database()))
                .map_err(|_| anyhow::anyhow!("createdb failed on the private PostgreSQL"))?;
        let port = url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse::<u16>().ok())
            .with_context(|| format!("no port in {url}"))?;
        let (postmaster, args) = find_postmaster(port)
            .with_context(|| format!("no postmaster listening with -p {port}"))?;
        let data_dir = args
            .windows(2)
            .find(|w| w[0] == "-D")
            .map(|w| PathBuf::from(&w[1]))
            .context("the postmaster has no -D")?;
        let pg_ctl = Path::new(&args[0]).with_file_name("pg_ctl");
        let psql = Path::new(&args[0]).with_file_name("psql");
        let database = url.rsplit('/').next().unwrap_or("postgres").to_string();
        let psql = |sql: &str| -> anyhow::Result<String> {
            let out = Command::new(&psql)
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .args(["-h", "127.0.0.1", "-U", "postgres", "-p", &port.to_string()])
                .args(["-d", &database, "-c", sql])
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("running {}", psql.display()))?;
            if !out.status.success() {
                bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        // Every commit durable before its ack, whatever the defaults (the
        // helper already passes `-c fsync=on`; Pitboss sets it for its
        // sessions too). Read back by a new session.
        psql(&format!(
            "ALTER DATABASE \"{database}\" SET synchronous_commit = on"
        ))?;
        let settings = format!(
            "fsync={} synchronous_commit={}",
            psql("SHOW fsync")?,
            psql("SHOW synchronous_commit")?
        );
        let pg = Postgres {
            server: Some(server),
            url,
            postmaster,
            data_dir,
            pg_ctl,
            settings,
        };
        if let Some(cpus) = &opts.server_cpus {
            // Backends forked later inherit the postmaster's affinity.
            for pid in std::iter::once(postmaster).chain(procstat::descendants(postmaster)) {
                run(Command::new("taskset")
                    .args(["-a", "-p", "-c", cpus])
                    .arg(pid.to_string()))?;
            }
        }
        tracing::info!(url = %pg.url, postmaster, settings = %pg.settings, "PostgreSQL started");
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:PORT/db0`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `fsync=on synchronous_commit=on`, as a new session saw them.
    pub fn settings(&self) -> &str {
        &self.settings
    }

    /// The CPU counters of the postmaster and every process it forked.
    pub fn stats(&self) -> ProcStats {
        ProcStats::tree(self.postmaster)
    }

    /// Its log's warnings and errors and last lines.
    pub fn log_excerpt(&self) -> String {
        let log = self
            .data_dir
            .parent()
            .map(|root| std::fs::read_to_string(root.join("postgres.log")).unwrap_or_default())
            .unwrap_or_default();
        excerpt(&log, |l| {
            l.contains("WARNING") || l.contains("ERROR") || l.contains("FATAL")
        })
    }

    /// `pg_ctl stop -m fast`; if the postmaster is still there after it, kills
    /// it by its pid. The directory goes with the helper's watchdog.
    pub fn stop(mut self) {
        let stopped = run(self
            .pg_ctl_command()
            .args(["stop", "-m", "fast", "-w", "-t", "30", "-D"])
            .arg(&self.data_dir));
        if let Err(err) = stopped {
            tracing::warn!("{err:#}");
        }
        if alive(self.postmaster) {
            tracing::warn!(
                pid = self.postmaster,
                "the postmaster outlived pg_ctl stop: killing it"
            );
            let _ignored = Command::new("kill")
                .args(["-KILL", &self.postmaster.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        // The helper's watchdog finds the server stopped, waits two seconds in
        // case it was still starting, and deletes the directory. Nobody needs to
        // wait for that: it happens even after this process has exited.
        if let Some(server) = self.server.take() {
            std::thread::spawn(move || drop(server));
        }
    }

    /// `pg_ctl`, as the owner of the data directory (`postgres` when this
    /// process is root).
    fn pg_ctl_command(&self) -> Command {
        let owner = std::fs::metadata(&self.data_dir).map_or(0, |m| m.uid());
        let me = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
        let mut cmd = if owner == me {
            Command::new(&self.pg_ctl)
        } else {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&self.pg_ctl);
            cmd
        };
        cmd.stdin(Stdio::null());
        cmd
    }
}

/// The postmaster listening on `port`: the `postgres` process started with
/// `-p PORT`, and its arguments.
fn find_postmaster(port: u16) -> Option<(u32, Vec<String>)> {
    let port = port.to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let program = Path::new(args.first()?).file_name()?;
            (program == "postgres" && args.windows(2).any(|w| w[0] == "-p" && w[1] == port))
                .then_some((pid, args))
        })
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s.get(i + 2..))
                .map(|r| !r.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Lines of a log worth showing: those `notable` (at most 40) and the last 20.
fn excerpt(log: &str, notable: impl Fn(&str) -> bool) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let marked: Vec<&str> = lines.iter().copied().filter(|l| notable(l)).collect();
    let mut out: Vec<&str> = marked[marked.len().saturating_sub(40)..].to_vec();
    out.push("…");
    out.extend_from_slice(&lines[lines.len().saturating_sub(20)..]);
    out.join("\n")
}

/// `name` in a directory of `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A loopback port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Runs a command to completion; its output is the error when it fails.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}
