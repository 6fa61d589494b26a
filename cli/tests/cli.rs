//! The built `aether` binary as a user runs it: exit codes and messages, both
//! runtimes, `AETHER_SERVER`, JSON log lines, and a limit set by a flag.
//!
//! Every process is spawned on loopback with `--port 0`, its addresses read
//! from what it prints, and killed by PID when the test ends (pass or fail).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// How long a line or an exit may take; generous, since CI machines are loaded.
const LIMIT: Duration = Duration::from_secs(30);

/// A running `aether`, killed on drop; its stdout and stderr lines arrive on channels.
struct Proc {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

fn aether(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aether"));
    cmd.args(args)
        .env_remove("AETHER_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn aether");
    let lines = |r: Box<dyn Read + Send>| {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            BufReader::new(r).lines().map_while(Result::ok).try_for_each(|l| tx.send(l))
        });
        rx
    };
    let out = lines(Box::new(child.stdout.take().expect("stdout")));
    let err = lines(Box::new(child.stderr.take().expect("stderr")));
    Proc { child, out, err }
}

impl Proc {
    /// The first line of `stream` that satisfies `want`, skipping others; panics after [`LIMIT`].
    fn line(rx: &Receiver<String>, what: &str, want: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + LIMIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line {what}: {e}"),
            }
        }
    }

    fn err_line(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        Self::line(&self.err, what, want)
    }

    /// Waits for the process to exit; its code and everything it wrote to stderr.
    fn exit(mut self) -> (i32, String) {
        let end = Instant::now() + LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < end, "aether did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        while let Ok(line) = self.err.recv_timeout(Duration::from_secs(5)) {
            err.push_str(&line);
            err.push('\n');
        }
        (status.code().unwrap_or(-1), err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `aether serve` on loopback with free ports; its public HTTP address.
fn serve(runtime: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    let args = [
        &["--runtime", runtime, "serve", "--address", "127.0.0.1", "--port", "0", "--tunnel-port", "0"],
        extra,
    ]
    .concat();
    let p = aether(&args, &[]);
    let line =
        p.err_line("saying where it serves", |l| l.contains("serving on http://") || l.contains("listening"));
    let addr = if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        v["http"].as_str().expect("http address").to_string()
    } else {
        let rest = &line[line.find("http://").expect("url") + 7..];
        rest[..rest.find(',').expect("comma")].to_string()
    };
    (p, addr.parse().expect("a socket address"))
}

/// A one-thread origin that answers every request with `body`.
fn origin(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut chunk) {
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        if s.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// GET `path` on `addr` with `headers` extra fields; the status and body of the reply.
fn get(addr: SocketAddr, path: &str, headers: usize) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for i in 0..headers {
        req.push_str(&format!("X-Extra-{i}: {i}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let status =
        reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {reply:?}"));
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// `aether share` against `server`; it prints the public URL on stdout.
fn share(runtime: &str, server: &str, port: u16, extra: &[&str]) -> (Proc, String) {
    let port = port.to_string();
    let args = [&["--runtime", runtime, "share", &port, "--server", server], extra].concat();
    let p = aether(&args, &[]);
    let url = Proc::line(&p.out, "with the public URL", |l| l.starts_with("http://"));
    (p, url)
}

/// GET through a tunnel once it has a connection: the URL is printed at registration, and until the
/// client's first connection lands the server answers 503 "tunnel offline" (noted in issue 10's note).
fn get_through(addr: SocketAddr, path: &str) -> (u16, String) {
    let end = Instant::now() + LIMIT;
    loop {
        let reply = get(addr, path, 0);
        if reply.0 != 503 || Instant::now() > end {
            return reply;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The path of a path-mode URL (`http://host:port/<id>` → `/<id>`).
fn path_of(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    rest[rest.find('/').expect("a path")..].to_string()
}

#[test]
fn version_and_help() {
    let (code, _) = aether(&["--version"], &[]).exit();
    assert_eq!(code, 0);
    let p = aether(&["--version"], &[]);
    let line = Proc::line(&p.out, "with the version", |_| true);
    assert_eq!(line, format!("aether {}", env!("CARGO_PKG_VERSION")));
    let p = aether(&["serve", "--help"], &[]);
    Proc::line(&p.out, "naming --max-headers", |l| l.contains("--max-headers"));
}

#[test]
fn tunnel_through_both_runtimes() {
    for rt in ["tokio", "smol"] {
        let port = origin("hello through the tunnel");
        let (_server, http) = serve(rt, &[]);
        let (_client, url) = share(rt, &format!("http://{http}"), port, &[]);
        assert_eq!(
            get_through(http, &format!("{}/x", path_of(&url))),
            (200, "hello through the tunnel".into()),
            "{rt}"
        );
    }
}

#[test]
fn aether_server_from_the_environment() {
    let port = origin("via AETHER_SERVER");
    let (server, http) = serve("tokio", &[]);
    let p = aether(&["share", &port.to_string()], &[("AETHER_SERVER", &format!("http://{http}"))]);
    let url = Proc::line(&p.out, "with the public URL", |l| l.starts_with("http://"));
    assert!(url.starts_with(&format!("http://{http}/")), "{url} is not on the server given by AETHER_SERVER");
    server.err_line("logging the registration", |l| l.contains("registered"));
    assert_eq!(get_through(http, &path_of(&url)).1, "via AETHER_SERVER");
}

#[test]
fn json_log_lines_parse() {
    let port = origin("json");
    let (server, http) = serve("smol", &["--log-format", "json"]);
    let (_client, url) = share("tokio", &format!("http://{http}"), port, &[]);
    let id = path_of(&url)[1..].to_string();
    for event in ["registered", "online"] {
        let line = server.err_line(event, |l| l.contains(&format!("\"event\":\"{event}\"")));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(v["tunnel"].as_str(), Some(id.as_str()), "{line}");
        assert!(v["ts"].as_f64().is_some_and(|t| t > 1.6e9), "{line}");
    }
}

#[test]
fn unreachable_server_exits_1() {
    // Bound but not listening: connections are refused, and the port stays ours for the whole test.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into()).expect("bind");
    let addr = socket.local_addr().expect("addr").as_socket().expect("inet");
    let (code, err) = aether(&["share", "3000", "--server", &format!("http://{addr}")], &[]).exit();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("cannot reach the server at http://{addr}")), "{err}");
}

#[test]
fn taken_and_invalid_names_exit_1() {
    let port = origin("first");
    let (_server, http) = serve("tokio", &[]);
    let server = format!("http://{http}");
    let (_first, _) = share("tokio", &server, port, &["--subdomain", "my-app"]);
    let (code, err) =
        aether(&["share", &port.to_string(), "--server", &server, "--subdomain", "my-app"], &[]).exit();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the tunnel name `my-app` is in use by another client"), "{err}");
    let (code, err) = aether(&["share", "3000", "--server", &server, "--subdomain", "My_App"], &[]).exit();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--subdomain My_App"), "{err}");
}

#[test]
fn port_in_use_exits_1() {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port().to_string();
    let args = ["serve", "--address", "127.0.0.1", "--port", &port, "--tunnel-port", "0"];
    let (code, err) = aether(&args, &[]).exit();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("cannot listen on 127.0.0.1 ports {port} and 0")), "{err}");
    assert!(err.contains("--port"), "says how to pick another: {err}");
}

#[test]
fn a_limit_set_by_flag_is_enforced() {
    let (_server, http) = serve("tokio", &["--max-headers", "4"]);
    // Host and Connection plus two extras is four fields: at the limit; one more is past it.
    assert_eq!(get(http, "/api/status", 2).0, 200);
    assert_eq!(get(http, "/api/status", 3).0, 431);
}
