//! A private `redis-server` per test, on a free loopback port, that the test can
//! kill, restart empty, stop and resume, and that is always killed (by PID) when
//! the guard is dropped, even when the test panics. Never the shared server on 6379.
//!
//! Needs only std, `tempfile` and the `redis` crate, so that another crate's tests
//! can include it with `#[path = ".../cluster/tests/support/redis_server.rs"] mod ...;`.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own part of it

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to tell whoever runs the tests without Redis installed.
const INSTALL: &str = "redis-server is not installed: these tests start private Redis servers. \
     Install the Debian package `redis-server` (apt-get install redis-server), \
     which provides /usr/bin/redis-server.";

/// How long a fresh redis-server may take to answer.
const STARTUP: Duration = Duration::from_secs(10);

/// A private redis-server process.
pub struct RedisServer {
    port: u16,
    /// Its working directory and log file; removed when the guard is dropped.
    dir: tempfile::TempDir,
    /// Extra command-line settings, kept for restarts.
    extra: Vec<String>,
    /// The running process, if any.
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with no persistence (so a restart comes back empty) and
    /// these extra settings (`["--name", "value", ...]`). Panics with install
    /// instructions if `redis-server` is missing.
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut server = Self {
            port: 0,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        // A free port can be taken by someone else between our probe and Redis's
        // bind; try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "redis-server did not start; its log:\n{}",
            server.log_tail()
        );
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Kills the server outright (SIGKILL, no shutdown, nothing saved).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill signals this PID only.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs and starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + STARTUP;
        // The port was just released; retry briefly if the bind races.
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}; its log:\n{}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A plain command connection, for inspecting the server.
    pub async fn admin(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("admin connection")
    }

    fn spawn(&mut self) -> bool {
        let log = self.dir.path().join("redis.log");
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &self.dir.path().to_string_lossy()])
            .args(["--logfile", &log.to_string_lossy()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL}"),
            Err(err) => panic!("cannot run redis-server: {err}. {INSTALL}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_exited)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if self.answers() {
                return true;
            }
            if Instant::now() > deadline {
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn answers(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut conn).is_ok()
    }

    /// The server's whole log file (it is kept across restarts).
    pub fn log(&self) -> String {
        let mut log = Vec::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.path().join("redis.log")) {
            let _ = file.read_to_end(&mut log);
        }
        String::from_utf8_lossy(&log).into_owned()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let start = log.len().saturating_sub(2000);
        let start = (start..=log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[start..].to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Sends a signal (`"STOP"`, `"CONT"`) to one process, by PID.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("`kill` (Debian package procps) is needed to stop and resume processes");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Like [`signal`], for drop guards: a process that is already gone is fine, and
/// a guard must not panic while a failing test unwinds.
pub fn signal_quietly(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}
