//! `aether-bench`: small-GET throughput and latency through an aether tunnel
//! versus the origin directly, and server RSS with idle tunnels, for both
//! runtimes. Runs the real `aether` binary (next to this one) as child
//! processes on loopback; prints a markdown table.
//!
//! `bash bench/run.sh` (add `--quick` for a one-second smoke run, `--runtime tokio|smol` for one).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--runtime tokio` or `--runtime smol` measures one; both by default.
    let only = args.iter().position(|a| a == "--runtime").and_then(|i| args.get(i + 1)).cloned();
    let secs = if quick { 1 } else { 10 };
    let idle_counts: &[usize] = if quick { &[1, 10] } else { &[1, 100] };
    let aether = std::env::current_exe().expect("own path").with_file_name("aether");
    assert!(aether.exists(), "build the CLI first: cargo build --release -p aether-cli");
    let origin = start_origin();
    let origin_addr = format!("127.0.0.1:{origin}");

    println!("| target | runtime | c | req/s | p50 ms | p99 ms | errors |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for c in [1, 32] {
        row("origin directly", "-", c, load(&origin_addr, "/hello", c, secs));
    }
    let mut memory = Vec::new();
    for rt in ["tokio", "smol"].into_iter().filter(|rt| only.as_deref().is_none_or(|o| o == *rt)) {
        let server = Proc::serve(&aether, rt);
        let share = Proc::share(&aether, rt, &server.http, origin);
        let path = format!("/{}/hello", share.id);
        wait_connected(&server.http, &share.id, 10);
        for c in [1, 32] {
            row("through aether", rt, c, load(&server.http, &path, c, secs));
        }
        drop(share);
        drop(server);
        let server = Proc::serve(&aether, rt);
        let base = rss_kib(server.child.id());
        let mut held = Vec::new();
        let mut figures = vec![(0, base)];
        for &n in idle_counts {
            while held.len() < n {
                held.push(idle_tunnel(&server));
            }
            wait_for(Duration::from_secs(10), || tunnels(&server.http) == n);
            figures.push((n, rss_kib(server.child.id())));
        }
        memory.push((rt, figures));
    }
    println!();
    println!("| runtime | idle tunnels (10 connections each) | server RSS KiB |");
    println!("| --- | --- | --- |");
    for (rt, figures) in memory {
        for (n, kib) in figures {
            println!("| {rt} | {n} | {kib} |");
        }
    }
}

fn row(target: &str, rt: &str, c: usize, r: Load) {
    let (p50, p99) = (r.percentile(0.50), r.percentile(0.99));
    println!("| {target} | {rt} | {c} | {:.0} | {p50:.3} | {p99:.3} | {} |", r.rps(), r.errors);
}

/// A child process, killed when dropped.
struct Proc {
    child: Child,
    http: String,
    tunnel: String,
    id: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Proc {
    fn serve(aether: &std::path::Path, rt: &str) -> Proc {
        let (port, tport) = (free_port(), free_port());
        let child = Command::new(aether)
            .args(["--runtime", rt, "serve", "--address", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--tunnel-port", &tport.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .expect("start aether serve");
        let http = format!("127.0.0.1:{port}");
        wait_for(Duration::from_secs(10), || TcpStream::connect(&http).is_ok());
        Proc { child, http, tunnel: format!("127.0.0.1:{tport}"), id: String::new() }
    }

    fn share(aether: &std::path::Path, rt: &str, server: &str, origin: u16) -> Proc {
        let mut child = Command::new(aether)
            .args(["--runtime", rt, "share", &origin.to_string(), "--server", server])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aether share");
        let mut url = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout).read_line(&mut url).expect("the share URL");
        let id = url.trim().rsplit('/').next().unwrap_or_default().to_owned();
        Proc { child, http: server.to_owned(), tunnel: String::new(), id }
    }
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "condition not met within {limit:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// One GET on a fresh connection; the whole (close-delimited) reply.
fn get(addr: &str, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else { return String::new() };
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn json_field(reply: &str, field: &str) -> Option<serde_json::Value> {
    let body = reply.split("\r\n\r\n").nth(1)?;
    serde_json::from_str::<serde_json::Value>(body).ok()?.get(field).cloned()
}

fn wait_connected(server: &str, id: &str, n: u64) {
    let path = format!("/api/tunnels/{id}/status");
    wait_for(Duration::from_secs(10), || {
        json_field(&get(server, &path), "connected_sockets").and_then(|v| v.as_u64()) == Some(n)
    });
}

fn tunnels(server: &str) -> usize {
    json_field(&get(server, "/api/status"), "tunnels").and_then(|v| v.as_u64()).unwrap_or(0) as usize
}

/// Registers a tunnel and opens its 10 connections with the handshake; they stay idle while held.
fn idle_tunnel(server: &Proc) -> Vec<TcpStream> {
    let reply = get(&server.http, "/?new");
    let id = json_field(&reply, "id").and_then(|v| v.as_str().map(str::to_owned)).expect("an id");
    let token = json_field(&reply, "token").and_then(|v| v.as_str().map(str::to_owned)).expect("a token");
    (0..10)
        .map(|_| {
            let mut s = TcpStream::connect(&server.tunnel).expect("tunnel port");
            writeln!(s, "{id} {token}").expect("hello");
            let mut verdict = [0u8; 9];
            s.read_exact(&mut verdict).expect("verdict");
            assert_eq!(&verdict, b"accepted\n");
            s
        })
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A minimal keep-alive origin: every request gets `hello`.
fn start_origin() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("origin port");
    let port = listener.local_addr().expect("origin addr").port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || serve_hello(stream));
        }
    });
    port
}

fn serve_hello(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            if s.write_all(HELLO).is_err() {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Latencies of one load run.
struct Load {
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
}

impl Load {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, q: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        let i = ((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1));
        l.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }
}

/// `c` keep-alive connections sending `GET path` for `secs`, each reply checked.
fn load(addr: &str, path: &str, c: usize, secs: u64) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..c)
        .map(|_| {
            let (addr, path, stop) = (addr.to_owned(), path.to_owned(), stop.clone());
            thread::spawn(move || client(&addr, &path, &stop))
        })
        .collect();
    thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut total = Load { latencies: Vec::new(), errors: 0, elapsed: started.elapsed() };
    for w in workers {
        let (lat, err) = w.join().unwrap_or_default();
        total.latencies.extend(lat);
        total.errors += err;
    }
    total
}

fn client(addr: &str, path: &str, stop: &AtomicBool) -> (Vec<Duration>, usize) {
    let (mut latencies, mut errors) = (Vec::new(), 0);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut conn: Option<TcpStream> = None;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    conn.insert(s)
                }
                Err(_) => {
                    errors += 1;
                    continue;
                }
            },
        };
        let t = Instant::now();
        let ok = s.write_all(request.as_bytes()).is_ok() && read_hello(s, &mut buf);
        if ok {
            latencies.push(t.elapsed());
        } else {
            errors += 1;
            conn = None;
        }
    }
    (latencies, errors)
}

/// Reads one response and checks it is the origin's `hello` (headers may differ through the proxy).
fn read_hello(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut have = 0;
    loop {
        if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            if have >= end + 4 + 5 {
                return buf[..have].starts_with(b"HTTP/1.1 200") && &buf[end + 4..end + 9] == b"hello";
            }
        }
        match s.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => have += n,
        }
        if have == buf.len() {
            return false;
        }
    }
}
