//! A private PostgreSQL server for one test process: its own data directory, socket
//! directory and loopback port, trust authentication, thrown away when the process
//! ends. It owns starting, handing out empty databases and cleaning up; it does not
//! know what the tests put in them.
//!
//! Self-contained (std only, no crate of this workspace) so another crate's tests can
//! copy or move it: `mod support;` with `support/mod.rs` declaring
//! `pub(crate) mod private_postgres;`, then
//!
//! ```ignore
//! let url = PrivatePostgres::shared().create_database();
//! // postgres://postgres@127.0.0.1:PORT/dbN, an empty database of its own.
//! ```
//!
//! # What it needs
//!
//! Debian's server binaries, `/usr/lib/postgresql/<version>/bin/{initdb,pg_ctl,createdb}`
//! (package `postgresql`), or a directory holding them named by `PITBOSS_PG_BINDIR`.
//! PostgreSQL refuses to run as root: as root, the server runs as the `postgres`
//! user through `runuser` (util-linux), in a directory under `/tmp` given to that
//! user; as anyone else it runs as that user. Missing binaries are a failure naming
//! the package to install, never a skipped test.
//!
//! # How it is cleaned up, however the process ends
//!
//! A test harness never runs the destructors of statics, and a process can be killed
//! mid-test, so the cleanup does not rely on this process doing anything at its end.
//! Before anything is created, a small watchdog (`sh`) is started in a process group
//! of its own (so a Ctrl-C on the terminal does not kill it first) reading its stdin
//! from a pipe whose only writing end this process holds (close-on-exec, so no other
//! child inherits it). When this process ends — normally, by panic, by a signal, even
//! `SIGKILL` — the kernel closes that end, the watchdog reads end-of-file, stops the
//! server with `pg_ctl stop -m immediate` and deletes the directory. It takes a fraction
//! of a second after the test binary exits. A [`PrivatePostgres`] that is not the
//! shared one does the same when dropped, and waits for it.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where Debian installs each server version's binaries.
const DEBIAN_LIB: &str = "/usr/lib/postgresql";

/// Overrides where the binaries are looked for (a directory holding `initdb`).
const BINDIR_VARIABLE: &str = "PITBOSS_PG_BINDIR";

/// The account the server runs as when this process is root.
const SERVER_USER: &str = "postgres";

/// Ports tried before giving up: a port found free can be taken by someone else
/// before the server binds it.
const START_ATTEMPTS: usize = 5;

/// Connections the server accepts. Tests run in parallel, and each store opens a
/// writer and a pool of readers.
const MAX_CONNECTIONS: u32 = 300;

/// A running private server. Get the process-wide one with [`PrivatePostgres::shared`].
pub(crate) struct PrivatePostgres {
    /// The directory holding `data/`, the socket and `postgres.log`.
    root: PathBuf,
    /// The directory of `initdb`, `pg_ctl`, `createdb`.
    bin: PathBuf,
    /// The loopback port it listens on.
    port: u16,
    /// The watchdog and the writing end of its stdin: closing it (drop, or this
    /// process ending) makes the watchdog stop the server and delete `root`.
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
    /// Names the next database [`PrivatePostgres::create_database`] makes.
    databases: AtomicUsize,
}

impl PrivatePostgres {
    /// The server shared by every test of this process, started on first use.
    /// Panics, with the reason and what to install, when it cannot be started; every
    /// later caller panics with the same reason rather than trying again.
    pub(crate) fn shared() -> &'static PrivatePostgres {
        static SHARED: OnceLock<Result<PrivatePostgres, String>> = OnceLock::new();
        match SHARED.get_or_init(PrivatePostgres::start) {
            Ok(server) => server,
            Err(why) => panic!("cannot start a private PostgreSQL server: {why}"),
        }
    }

    /// Starts a new server in a fresh directory. Prefer [`PrivatePostgres::shared`]:
    /// `initdb` takes a second or two.
    pub(crate) fn start() -> Result<PrivatePostgres, String> {
        let bin = find_binaries()?;
        let as_root = running_as_root()?;
        let root = fresh_directory(as_root)?;
        // First, so that whatever follows fails or is killed, the directory goes.
        let watchdog = start_watchdog(&root, &bin, as_root)?;
        let mut server = PrivatePostgres {
            root,
            bin,
            port: 0,
            watchdog: Mutex::new(Some(watchdog)),
            databases: AtomicUsize::new(0),
        };
        if as_root {
            run(Command::new("chown").arg(SERVER_USER).arg(&server.root))?;
        }
        run(server
            .server_command("initdb", as_root)
            .arg("-D")
            .arg(server.data())
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--locale=C",
                // Only initdb's own final flush; the server runs with fsync on.
                "--no-sync",
            ]))?;
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match server.start_on(port, as_root) {
                Ok(()) => {
                    server.port = port;
                    return Ok(server);
                }
                Err(why) => failures.push(format!("port {port}: {why}")),
            }
        }
        Err(format!(
            "the server did not start:\n{}\n--- {}:\n{}",
            failures.join("\n"),
            server.log().display(),
            std::fs::read_to_string(server.log()).unwrap_or_default()
        ))
    }

    /// A new, empty database of its own; returns its URL.
    pub(crate) fn create_database(&self) -> String {
        let name = format!("db{}", self.databases.fetch_add(1, Ordering::Relaxed));
        let created = run(Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(&name));
        if let Err(why) = created {
            panic!("creating database {name}: {why}");
        }
        self.url(&name)
    }

    /// The URL of database `name` on this server.
    pub(crate) fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The data directory.
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server's log.
    fn log(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// `pg_ctl start` on `port`, waiting until it accepts connections.
    fn start_on(&self, port: u16, as_root: bool) -> Result<(), String> {
        let server_options = format!(
            "-p {port} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=on \
             -c max_connections={MAX_CONNECTIONS}",
            self.root.display()
        );
        run(self
            .server_command("pg_ctl", as_root)
            .arg("start")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .args(["-w", "-t", "60", "-o"])
            .arg(server_options))
        .map(|_| ())
    }

    /// A server binary, run as the server's user when this process is root.
    fn server_command(&self, program: &str, as_root: bool) -> Command {
        server_command(&self.bin, program, as_root)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let watchdog = self
            .watchdog
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((mut child, stdin)) = watchdog {
            // End-of-file for the watchdog: it stops the server and deletes the
            // directory. Waited for, so the server is gone when drop returns.
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// `program` from `bin`, through `runuser` when this process is root.
fn server_command(bin: &Path, program: &str, as_root: bool) -> Command {
    let path = bin.join(program);
    let mut command = if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", SERVER_USER, "--"]).arg(path);
        command
    } else {
        Command::new(path)
    };
    // The server and its tools must not print into the test harness's output, nor
    // hold its pipes open after this process ends.
    command.stdin(Stdio::null());
    command
}

/// The newest server version's binaries (or those `PITBOSS_PG_BINDIR` names).
fn find_binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BINDIR_VARIABLE) {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(format!(
                "{BINDIR_VARIABLE}={} holds no initdb",
                dir.display()
            ))
        };
    }
    let missing = || {
        format!(
            "PostgreSQL server binaries not found ({DEBIAN_LIB}/<version>/bin/initdb). \
             Install the Debian package `postgresql` (apt-get install postgresql), \
             or set {BINDIR_VARIABLE} to the directory holding initdb and pg_ctl."
        )
    };
    let versions = std::fs::read_dir(DEBIAN_LIB).map_err(|_| missing())?;
    let mut found: Vec<(u32, PathBuf)> = versions
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            ["initdb", "pg_ctl", "createdb"]
                .iter()
                .all(|tool| bin.join(tool).is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(missing)
}

/// Whether this process runs as root, read from the owner of `/proc/self` (std has no
/// `getuid`, and this module stays free of `unsafe` and of crates).
fn running_as_root() -> Result<bool, String> {
    std::fs::metadata("/proc/self")
        .map(|meta| meta.uid() == 0)
        .map_err(|e| format!("reading /proc/self: {e}"))
}

/// A new directory for the server. Under `/tmp` when root: `TMPDIR` may point
/// somewhere the server's user cannot enter. Short, so the socket path fits.
fn fresh_directory(as_root: bool) -> Result<PathBuf, String> {
    let base = if as_root {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let root = base.join(format!("pitboss-pg-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    Ok(root)
}

/// Starts the watchdog that cleans up after this process: see the module docs.
fn start_watchdog(root: &Path, bin: &Path, as_root: bool) -> Result<(Child, ChildStdin), String> {
    // `$1` the directory; the rest the pg_ctl command line. The stop is tried again
    // after a pause in case this process died while `pg_ctl start` was still bringing
    // the server up (before its pid file existed).
    const SCRIPT: &str = r#"
        trap '' HUP INT
        root=$1; shift
        cat >/dev/null
        "$@" stop -D "$root/data" -m immediate -w >/dev/null 2>&1 \
          || { sleep 2; "$@" stop -D "$root/data" -m immediate -w >/dev/null 2>&1; }
        rm -rf "$root"
    "#;
    let pg_ctl = server_command(bin, "pg_ctl", as_root);
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(SCRIPT)
        .arg("pitboss-pg-watchdog")
        .arg(root)
        .arg(pg_ctl.get_program())
        .args(pg_ctl.get_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting the cleanup watchdog (sh): {e}"))?;
    match child.stdin.take() {
        Some(stdin) => Ok((child, stdin)),
        None => Err("the cleanup watchdog has no stdin".into()),
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, String> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Runs a command to completion; its output is the error when it fails.
fn run(command: &mut Command) -> Result<Output, String> {
    let shown = format!("{command:?}");
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running {shown}: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        // Some tools explain themselves on stdout.
        stderr.push_str(&String::from_utf8_lossy(&output.stdout));
        Err(format!("{shown} failed ({}): {stderr}", output.status))
    }
}
