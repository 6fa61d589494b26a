//! What the CLI tests drive: the built `aether` binary as a child process killed by PID on drop,
//! with its output collected line by line; a tiny origin; a one-shot HTTP client; and a TCP proxy
//! whose target the test switches (so no test ever reuses a port number).
//!
//! Everything is std and loopback. Waits poll a condition with a bound (`AETHER_TEST_SLACK`
//! multiplies the bounds); nothing sleeps in place of a condition.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The bound for one wait: 20 s times `AETHER_TEST_SLACK` (default 1).
pub fn bound() -> Duration {
    let slack =
        std::env::var("AETHER_TEST_SLACK").ok().and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(1.0);
    Duration::from_secs_f64(20.0 * slack.max(1.0))
}

/// Lines a child wrote to one stream, so far.
#[derive(Default)]
struct Lines {
    lines: Mutex<(Vec<String>, bool)>,
    grew: Condvar,
}

impl Lines {
    fn collect(stream: impl Read + Send + 'static) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().unwrap().0.push(line);
                sink.grew.notify_all();
            }
            sink.lines.lock().unwrap().1 = true;
            sink.grew.notify_all();
        });
        lines
    }

    /// Waits at most [`bound`] until `done` holds for the lines so far; whether it did.
    fn wait(&self, done: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + bound();
        let mut g = self.lines.lock().unwrap();
        loop {
            if done(&g.0) {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            if g.1 {
                return false;
            }
            g = self.grew.wait_timeout(g, left).unwrap().0;
        }
    }

    /// The first line matching `want`, waiting for it at most [`bound`].
    fn wait_for(&self, want: impl Fn(&str) -> bool) -> Option<String> {
        let found = |lines: &[String]| lines.iter().find(|l| want(l)).cloned();
        self.wait(|lines| found(lines).is_some());
        found(&self.all())
    }

    fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().0.clone()
    }
}

/// A running `aether`, killed (by its PID) when dropped, pass or fail.
pub struct Aether {
    child: Child,
    out: Arc<Lines>,
    err: Arc<Lines>,
}

impl Aether {
    /// Starts `aether <args>` with `env` added to the environment and `AETHER_SERVER` removed.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Aether {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aether"));
        cmd.args(args)
            .env_remove("AETHER_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("spawn the aether binary");
        let out = Lines::collect(child.stdout.take().unwrap());
        let err = Lines::collect(child.stderr.take().unwrap());
        Aether { child, out, err }
    }

    /// The first stderr line containing `text`; panics with everything it wrote if none comes.
    pub fn stderr_line(&self, text: &str) -> String {
        self.err
            .wait_for(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no stderr line with {text:?}: {self}"))
    }

    /// Waits until `n` stderr lines contain `text`; panics if they do not come.
    pub fn stderr_lines(&self, text: &str, n: usize) {
        let enough = self.err.wait(|lines| lines.iter().filter(|l| l.contains(text)).count() >= n);
        assert!(enough, "fewer than {n} stderr lines with {text:?}: {self}");
    }

    /// The first stdout line; panics if none comes.
    pub fn stdout_line(&self) -> String {
        self.out.wait_for(|_| true).unwrap_or_else(|| panic!("nothing on stdout: {self}"))
    }

    /// Every stderr line so far.
    pub fn stderr(&self) -> Vec<String> {
        self.err.all()
    }

    /// Waits for the process to end; panics if it still runs after [`bound`].
    pub fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + bound();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Its pipes close with it; let the readers take the last lines.
                self.err.wait(|_| false);
                self.out.wait(|_| false);
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("still running: {self}");
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Kills it now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::fmt::Display for Aether {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\nstdout: {:#?}\nstderr: {:#?}", self.out.all(), self.err.all())
    }
}

impl Drop for Aether {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `aether <args>` to its end: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let mut a = Aether::spawn(args, &[]);
    let code = a.exit().code();
    (code, a.out.all().join("\n"), a.err.all().join("\n"))
}

/// `aether serve` on loopback, free ports; the bound HTTP address, read from its "serving" line.
pub fn serve(runtime: &str, extra: &[&str]) -> (Aether, SocketAddr) {
    let mut args =
        vec!["--runtime", runtime, "serve", "--address", "127.0.0.1", "--port", "0", "--tunnel-port", "0"];
    args.extend_from_slice(extra);
    let server = Aether::spawn(&args, &[]);
    let line = server.stderr_line("serving on http://");
    let http = line.split("http://").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default();
    let http = http.parse().unwrap_or_else(|_| panic!("no address in {line:?}"));
    (server, http)
}

/// `aether share <origin>` through `server`; its tunnel id, once the server says it is online.
pub fn share(
    runtime: &str,
    server: &Aether,
    addr: SocketAddr,
    origin: u16,
    extra: &[&str],
) -> (Aether, String) {
    let (url, port) = (format!("http://{addr}"), origin.to_string());
    let mut args = vec!["--runtime", runtime, "share", &port, "--server", &url];
    args.extend_from_slice(extra);
    let client = Aether::spawn(&args, &[]);
    let id = tunnel_id(&client.stdout_line());
    server.stderr_line(&format!("tunnel {id} online"));
    (client, id)
}

/// The tunnel id at the end of a path-mode URL (`http://host:port/<id>`).
pub fn tunnel_id(url: &str) -> String {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned()
}

/// An origin answering every request `200 hello from the origin`, one request per connection.
pub struct Origin {
    /// Its port.
    pub port: u16,
}

impl Origin {
    /// Starts it on loopback; its thread lives as long as the test process.
    pub fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || answer(stream));
            }
        });
        Origin { port }
    }
}

fn answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let body = "hello from the origin";
    let reply =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = stream.write_all(reply.as_bytes());
}

/// `GET <path>` on `addr` with `Connection: close` and `headers`: (status, body).
pub fn get(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(bound())).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut reply = String::new();
    // A server that closes after an error reply may reset the rest: keep what was read.
    let _ = s.read_to_string(&mut reply);
    let status = reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A TCP proxy on a loopback port of its own, forwarding to a target the test switches;
/// with no target it closes what it accepts.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
}

impl Proxy {
    /// Starts it, forwarding to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Some(target)));
        let to = shared.clone();
        std::thread::spawn(move || {
            for visitor in listener.incoming().flatten() {
                let Some(target) = *to.lock().unwrap() else { continue };
                let Ok(upstream) = TcpStream::connect(target) else { continue };
                pipe(visitor.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, visitor);
            }
        });
        Proxy { addr, target: shared }
    }

    /// Forwards new connections to `target` from now on.
    pub fn switch(&self, target: Option<SocketAddr>) {
        *self.target.lock().unwrap() = target;
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
    });
}
