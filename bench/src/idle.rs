//! aether's memory and scale figures: a fresh server, `n` tunnels registered with `GET /?new`
//! and 10 (or, for the widest scale figure, 1) handshaked connections opened for each (`<id> <token>\n`, answered `accepted\n`),
//! all held idle by the bench (registered from 8 threads at once); the server's RSS before and after, and the time it took.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::systems::{self, rss_kib, wait_for};

/// One GET on a fresh connection; the whole (close-delimited) reply, or empty on failure.
pub fn get(addr: &str, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A field of a reply's JSON body.
pub fn json_field(reply: &str, field: &str) -> Option<serde_json::Value> {
    let body = reply.split("\r\n\r\n").nth(1)?;
    serde_json::from_str::<serde_json::Value>(body).ok()?.get(field).cloned()
}

fn tunnels(server: &str) -> Option<u64> {
    json_field(&get(server, "/api/status"), "tunnels").and_then(|v| v.as_u64())
}

/// Threads registering tunnels at once (each registration is a few round trips).
const REGISTRARS: usize = 8;

/// What holding `n` idle tunnels cost a fresh server.
pub struct Idle {
    /// Tunnels registered.
    pub tunnels: usize,
    /// Server RSS before any tunnel, KiB.
    pub base_kib: u64,
    /// Server RSS holding them, KiB.
    pub held_kib: u64,
    /// Time to register them all and open their connections.
    pub register: Duration,
    /// Server CPU seconds spent meanwhile, if `/proc` told.
    pub register_cpu: Option<f64>,
}

impl Idle {
    /// Server RSS per idle tunnel (of 10 connections), bytes.
    pub fn bytes_per_tunnel(&self) -> f64 {
        (self.held_kib.saturating_sub(self.base_kib) * 1024) as f64 / self.tunnels.max(1) as f64
    }
}

/// Connections per tunnel in the memory figure (the client's default pool).
pub const CONNS: usize = 10;

/// Registers one tunnel and opens its `conns` connections.
fn idle_tunnel(http: &str, tunnel: &str, conns: usize) -> Result<Vec<TcpStream>, String> {
    let reply = get(http, "/?new");
    let field = |name| json_field(&reply, name).and_then(|v| v.as_str().map(str::to_owned));
    let (Some(id), Some(token)) = (field("id"), field("token")) else {
        return Err(format!("registration reply without id/token: {:?}", reply.lines().next()));
    };
    (0..conns)
        .map(|_| {
            let mut s = TcpStream::connect(tunnel).map_err(|e| format!("tunnel port: {e}"))?;
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            writeln!(s, "{id} {token}").map_err(|e| format!("handshake: {e}"))?;
            let mut verdict = [0u8; 9];
            s.read_exact(&mut verdict).map_err(|e| format!("verdict: {e}"))?;
            if &verdict != b"accepted\n" {
                return Err(format!("verdict {:?}", String::from_utf8_lossy(&verdict)));
            }
            Ok(s)
        })
        .collect()
}

/// Measures a fresh `aether serve` on `rt` holding `n` idle tunnels of 10 connections each.
pub fn measure(aether: &Path, rt: &str, n: usize) -> Result<Idle, String> {
    let (server, http, tunnel) = systems::aether_server(aether, rt)?;
    // Let the server settle (and warm its status path) before the base figure.
    let _ = tunnels(&http);
    let base_kib = rss_kib(server.pid());
    let cpu_before = systems::cpu_precise(server.pid());
    let started = Instant::now();
    let held = thread::scope(|scope| {
        let workers: Vec<_> = (0..REGISTRARS)
            .map(|w| {
                let (http, tunnel) = (&http, &tunnel);
                scope.spawn(move || {
                    (w..n)
                        .step_by(REGISTRARS)
                        .map(|i| idle_tunnel(http, tunnel, CONNS).map_err(|e| format!("tunnel {i}: {e}")))
                        .collect::<Result<Vec<_>, String>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("a registering thread panicked".into())))
            .collect::<Result<Vec<_>, String>>()
    })?;
    let register = started.elapsed();
    let register_cpu = cpu_before.zip(systems::cpu_precise(server.pid())).map(|(a, b)| b - a);
    if !wait_for(Duration::from_secs(10), || tunnels(&http) == Some(n as u64)) {
        return Err(format!("server reports {:?} tunnels, expected {n}", tunnels(&http)));
    }
    let held_kib = rss_kib(server.pid());
    drop(held);
    drop(server);
    Ok(Idle { tunnels: n, base_kib, held_kib, register, register_cpu })
}

/// How many idle tunnels of `conns` connections a fresh server on `rt` holds, trying up to `cap`:
/// the count held and, if it stopped short, the first error.
pub fn scale(aether: &Path, rt: &str, cap: usize, conns: usize) -> Result<(usize, Option<String>), String> {
    let (server, http, tunnel) = systems::aether_server(aether, rt)?;
    let next = AtomicUsize::new(0);
    let failure = Mutex::new(None::<String>);
    let held = thread::scope(|scope| {
        let workers: Vec<_> = (0..REGISTRARS)
            .map(|_| {
                let (http, tunnel, next, failure) = (&http, &tunnel, &next, &failure);
                scope.spawn(move || {
                    let mut held = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < cap {
                        match idle_tunnel(http, tunnel, conns) {
                            Ok(t) => held.push(t),
                            Err(e) => {
                                next.store(cap, Ordering::Relaxed);
                                if let Ok(mut f) = failure.lock() {
                                    f.get_or_insert(e);
                                }
                                break;
                            }
                        }
                    }
                    held
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_default()).collect::<Vec<_>>()
    });
    let count = held.iter().map(Vec::len).sum();
    // Every one of them still answered: the server held them all at once.
    if count > 0 && tunnels(&http) != Some(count as u64) {
        return Err(format!("server reports {:?} tunnels, the bench holds {count}", tunnels(&http)));
    }
    drop(held);
    drop(server);
    Ok((count, failure.into_inner().unwrap_or_default()))
}
