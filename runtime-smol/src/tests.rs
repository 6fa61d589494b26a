//! A whole tunnel over loopback on this crate alone: serve, share, requests
//! through it from plain `std::net`, a dropped `Share` closing its tunnel
//! connections on the server, and a stopped server closing its visitor connections.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{ServeOptions, ShareOptions, ShareStatus, serve, share};

/// An origin that answers each request with `echo:` and the request's body, then closes.
fn origin() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind origin");
    let addr = listener.local_addr().expect("origin address");
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let Ok(n @ 1..) = s.read(&mut chunk) else { return };
                    got.extend_from_slice(&chunk[..n]);
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while got.len() < head_end + length {
                    let Ok(n @ 1..) = s.read(&mut chunk) else { return };
                    got.extend_from_slice(&chunk[..n]);
                }
                let body = [b"echo:".as_slice(), &got[head_end..head_end + length]].concat();
                let head =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = s.write_all(&[head.as_bytes(), &body].concat());
            });
        }
    });
    addr
}

/// One request on a fresh connection; the whole response as text.
fn fetch(addr: SocketAddr, method: &str, target: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the server");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send the request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `f` until it returns `Some` or `limit` passes.
fn within<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tunnel_end_to_end_and_drop_closes_connections() {
    let opts = ServeOptions {
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        tunnel_port: 0,
        ..ServeOptions::default()
    };
    let server = serve(opts, |_| {}).expect("serve");
    let http = server.http_addr();
    let client =
        share(ShareOptions::new(&http.to_string(), origin().port()), Arc::new(|_| {})).expect("share");
    let ShareStatus::Online(url) = client.wait_online(Duration::from_secs(10)) else {
        panic!("the share did not come online")
    };
    let id = url.rsplit('/').next().expect("an id in the URL").to_owned();

    let get = within(Duration::from_secs(10), || {
        Some(fetch(http, "GET", &format!("/{id}/"), "")).filter(|r| r.starts_with("HTTP/1.1 200"))
    });
    assert!(get.is_some_and(|r| r.ends_with("echo:")), "GET through the tunnel");
    let post = fetch(http, "POST", &format!("/{id}/upload"), "hello body");
    assert!(post.starts_with("HTTP/1.1 200") && post.ends_with("echo:hello body"), "{post}");

    let status = format!("/api/tunnels/{id}/status");
    let sockets = |want_zero: bool| {
        let r = fetch(http, "GET", &status, "");
        (r.contains("\"connected_sockets\":") && r.contains("\"connected_sockets\":0") == want_zero)
            .then_some(r)
    };
    assert!(within(Duration::from_secs(5), || sockets(false)).is_some(), "the pool filled");
    drop(client);
    assert!(
        within(Duration::from_secs(3), || sockets(true)).is_some(),
        "dropping the share closed its sockets"
    );
    // A kept-alive visitor connection the server has accepted and answered: stopping closes it.
    // (Connecting to the old port afterwards could reach another test's listener on it.)
    let mut kept = TcpStream::connect(http).expect("connect to the server");
    kept.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    kept.write_all(format!("GET {status} HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes()).expect("send");
    let mut answer = [0u8; 12];
    kept.read_exact(&mut answer).expect("the server answers");
    assert_eq!(&answer, b"HTTP/1.1 200");
    server.stop();
    let mut rest = Vec::new();
    let end = kept.read_to_end(&mut rest);
    assert!(
        end.is_ok() || end.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the stopped server closed its visitor connection (not a read timeout): {end:?}"
    );
}
