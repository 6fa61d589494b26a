//! The systems under test and their processes: the origin directly, aether on each runtime,
//! and the TCP tunnels bore and rathole (installed by `run.sh` under `bench/.tools`).
//!
//! Every child process is held by a [`Proc`], which kills and reaps it when dropped, so a
//! panic or an early return never leaves a server behind.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::load::Target;

/// A system the bench can measure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum System {
    /// The origin with nothing in front: the floor.
    Direct,
    /// `aether serve` + `aether share` on a runtime (`tokio` or `smol`).
    Aether(&'static str),
    /// `bore server` + `bore local`.
    Bore,
    /// `rathole` server + client, one service.
    Rathole,
}

impl System {
    /// Every system, in table order.
    pub const ALL: [System; 5] =
        [System::Direct, System::Aether("tokio"), System::Aether("smol"), System::Bore, System::Rathole];

    /// The column name (also the `--systems` name).
    pub fn name(self) -> &'static str {
        match self {
            System::Direct => "direct",
            System::Aether("smol") => "aether-smol",
            System::Aether(_) => "aether-tokio",
            System::Bore => "bore",
            System::Rathole => "rathole",
        }
    }

    /// Whether this is one of the peers aether is compared with.
    pub fn is_peer(self) -> bool {
        matches!(self, System::Bore | System::Rathole)
    }
}

/// Where the binaries are.
pub struct Bins {
    /// The `aether` CLI.
    pub aether: PathBuf,
    /// `bench/.tools/bin`.
    pub tools: PathBuf,
}

/// A child process, killed and reaped when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `cmd`; the error names the program.
    pub fn spawn(cmd: &mut Command) -> Result<Proc, String> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        cmd.spawn().map(|child| Proc { child }).map_err(|e| format!("cannot start {program}: {e}"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    fn alive(&mut self, what: &str) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{what} exited: {status}")),
            Err(e) => Err(format!("{what}: {e}")),
        }
    }

    fn stdout(&mut self) -> Result<ChildStdout, String> {
        self.child.stdout.take().ok_or_else(|| "no stdout".to_owned())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A system up and serving the origin.
pub struct Running {
    /// Where the load goes.
    pub target: Target,
    /// The public server process (none for the origin directly).
    pub server: Option<Proc>,
    /// The client process next to the origin.
    pub client: Option<Proc>,
    /// Scratch files to remove (rathole's configuration).
    scratch: Option<PathBuf>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Processes first (fields drop after this), then their files.
        self.client.take();
        self.server.take();
        if let Some(dir) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Running {
    /// Pids of the tunnel's own processes (server, client).
    pub fn pids(&self) -> Vec<u32> {
        self.server.iter().chain(self.client.iter()).map(Proc::pid).collect()
    }
}

/// A free loopback port (free now; taken by whoever binds it next).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn wait_listening(addr: &str, proc: &mut Proc, what: &str) -> Result<(), String> {
    if wait_for(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()) {
        return Ok(());
    }
    proc.alive(what)?;
    Err(format!("{what} not listening on {addr} within 10 s"))
}

/// Reads `stdout` lines until `pick` finds something, then drains the rest on a thread
/// (so the child never blocks on a full pipe).
fn first_match<T>(stdout: ChildStdout, pick: impl Fn(&str) -> Option<T>) -> Option<T> {
    let mut lines = BufReader::new(stdout);
    let mut line = String::new();
    let found = loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => break None,
            Ok(_) => {
                if let Some(found) = pick(&strip_ansi(&line)) {
                    break Some(found);
                }
            }
        }
    };
    thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    found
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Starts `system` in front of the origin on `origin` and checks one request through it.
pub fn start(system: System, bins: &Bins, origin: u16) -> Result<Running, String> {
    let running = match system {
        System::Direct => Ok(Running {
            target: Target { addr: format!("127.0.0.1:{origin}"), prefix: String::new() },
            server: None,
            client: None,
            scratch: None,
        }),
        System::Aether(rt) => start_aether(&bins.aether, rt, origin),
        System::Bore => start_bore(&bins.tools.join("bore"), origin),
        System::Rathole => start_rathole(&bins.tools.join("rathole"), origin),
    }?;
    crate::load::probe(&running.target).map_err(|e| format!("request through it failed: {e}"))?;
    Ok(running)
}

fn require(bin: &Path) -> Result<(), String> {
    if bin.exists() {
        return Ok(());
    }
    let name = bin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let log = bin.parent().and_then(Path::parent).map(|t| t.join(format!("{name}.log")));
    let reason = log
        .and_then(|l| std::fs::read_to_string(l).ok())
        .and_then(|l| l.lines().rev().find(|l| l.starts_with("error")).map(str::to_owned));
    Err(match reason {
        Some(r) => format!("not installed ({r})"),
        None => format!("not installed ({} missing; run bench/run.sh)", bin.display()),
    })
}

/// Starts an aether server on `rt` (no share).
pub fn aether_server(aether: &Path, rt: &str) -> Result<(Proc, String, String), String> {
    let (port, tport) = (free_port()?, free_port()?);
    let mut server = Proc::spawn(
        Command::new(aether)
            .args(["--runtime", rt, "serve", "--address", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--tunnel-port", &tport.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let http = format!("127.0.0.1:{port}");
    wait_listening(&http, &mut server, "aether serve")?;
    Ok((server, http, format!("127.0.0.1:{tport}")))
}

fn start_aether(aether: &Path, rt: &str, origin: u16) -> Result<Running, String> {
    let (server, http, _) = aether_server(aether, rt)?;
    let mut client = Proc::spawn(
        Command::new(aether)
            .args(["--runtime", rt, "share", &origin.to_string(), "--server", &http])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )?;
    let url = first_match(client.stdout()?, |l| l.contains("://").then(|| l.trim().to_owned()));
    let id = url.and_then(|u| u.rsplit('/').next().map(str::to_owned));
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        client.alive("aether share")?;
        return Err("aether share printed no URL".into());
    };
    let status = format!("/api/tunnels/{id}/status");
    let connected = wait_for(Duration::from_secs(10), || {
        crate::idle::json_field(&crate::idle::get(&http, &status), "connected_sockets")
            .and_then(|v| v.as_u64())
            == Some(10)
    });
    if !connected {
        return Err("aether share did not open its 10 connections within 10 s".into());
    }
    Ok(Running {
        target: Target { addr: http.clone(), prefix: format!("/{id}") },
        server: Some(server),
        client: Some(client),
        scratch: None,
    })
}

/// bore's control port is fixed at 7835.
const BORE_CONTROL: &str = "127.0.0.1:7835";

fn start_bore(bore: &Path, origin: u16) -> Result<Running, String> {
    require(bore)?;
    if TcpStream::connect(BORE_CONTROL).is_ok() {
        return Err(format!("{BORE_CONTROL} (bore's fixed control port) is already in use"));
    }
    let mut server = Proc::spawn(
        Command::new(bore)
            .args(["server", "--bind-addr", "127.0.0.1"])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    wait_listening(BORE_CONTROL, &mut server, "bore server")?;
    let mut client = Proc::spawn(
        Command::new(bore)
            .args(["local", "--local-host", "127.0.0.1", "--to", "127.0.0.1", &origin.to_string()])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )?;
    let addr = first_match(client.stdout()?, |l| {
        let rest = l.split("listening at ").nth(1)?;
        Some(rest.split_whitespace().next()?.to_owned())
    });
    let Some(addr) = addr else {
        client.alive("bore local")?;
        return Err("bore local printed no `listening at` address".into());
    };
    Ok(Running {
        target: Target { addr, prefix: String::new() },
        server: Some(server),
        client: Some(client),
        scratch: None,
    })
}

fn start_rathole(rathole: &Path, origin: u16) -> Result<Running, String> {
    require(rathole)?;
    let dir = std::env::temp_dir().join(format!("aether-bench-rathole-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut running = Running {
        target: Target { addr: String::new(), prefix: String::new() },
        server: None,
        client: None,
        scratch: Some(dir.clone()),
    };
    let (control, public) = (free_port()?, free_port()?);
    let token = format!("bench-{}-{}", std::process::id(), control);
    let server_toml = format!(
        "[server]\nbind_addr = \"127.0.0.1:{control}\"\ndefault_token = \"{token}\"\n\n\
         [server.services.origin]\nbind_addr = \"127.0.0.1:{public}\"\n"
    );
    let client_toml = format!(
        "[client]\nremote_addr = \"127.0.0.1:{control}\"\ndefault_token = \"{token}\"\n\n\
         [client.services.origin]\nlocal_addr = \"127.0.0.1:{origin}\"\n"
    );
    let write =
        |name: &str, text: &str| std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"));
    write("server.toml", &server_toml)?;
    write("client.toml", &client_toml)?;
    let mut server = Proc::spawn(
        Command::new(rathole)
            .arg("--server")
            .arg(dir.join("server.toml"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    wait_listening(&format!("127.0.0.1:{control}"), &mut server, "rathole server")?;
    running.server = Some(server);
    let client = Proc::spawn(
        Command::new(rathole)
            .arg("--client")
            .arg(dir.join("client.toml"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    running.client = Some(client);
    running.target.addr = format!("127.0.0.1:{public}");
    // The public port opens with the server; the service is up once the client's control
    // channel is: until then a visitor's connection is accepted and dropped.
    let up = wait_for(Duration::from_secs(10), || crate::load::probe(&running.target).is_ok());
    if !up {
        if let Some(c) = running.client.as_mut() {
            c.alive("rathole client")?;
        }
        return Err("rathole did not serve the origin within 10 s".into());
    }
    Ok(running)
}

/// Resident set size of `pid`, in KiB (0 if it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// Peak resident set size of `pid`, in KiB (0 if it cannot be read).
pub fn hwm_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// User + system CPU time of `pid` so far, in seconds (`/proc/<pid>/stat`, 100 ticks/s).
pub fn cpu_secs(pid: u32) -> Option<Cpu> {
    let mut stat = String::new();
    std::fs::File::open(format!("/proc/{pid}/stat")).ok()?.read_to_string(&mut stat).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Cpu { user: utime as f64 / 100.0, kernel: stime as f64 / 100.0 })
}

/// On-CPU seconds of all of `pid`'s threads so far, to the nanosecond (`/proc/<pid>/task/*/schedstat`):
/// fine enough for phases of a few milliseconds, where `cpu_secs` counts 10 ms ticks.
pub fn cpu_precise(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        ns += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(ns as f64 / 1e9)
}

/// CPU seconds a process has used so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// In user space.
    pub user: f64,
    /// In the kernel (system calls, TCP).
    pub kernel: f64,
}

impl Cpu {
    /// This plus what was used between the readings `before` and `after`.
    pub fn plus(self, before: Cpu, after: Cpu) -> Cpu {
        Cpu { user: self.user + after.user - before.user, kernel: self.kernel + after.kernel - before.kernel }
    }
}

/// CPU used so far by all of `pids`; `None` if one cannot be read.
pub fn cpu_of(pids: &[u32]) -> Option<Cpu> {
    pids.iter().map(|&p| cpu_secs(p)).sum()
}

impl std::iter::Sum for Cpu {
    fn sum<I: Iterator<Item = Cpu>>(iter: I) -> Cpu {
        iter.fold(Cpu::default(), |a, b| Cpu { user: a.user + b.user, kernel: a.kernel + b.kernel })
    }
}
