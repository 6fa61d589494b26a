//! The client's handshake modes end to end (SPEC §9, audit M11): `legacy` (the bare `<id>`
//! line, against a server started with the legacy handshake) and tokenless (a
//! localtunnel-style server whose registration reply has no `token` and which expects no hello
//! line: a small fake written here). Not covered: the client's `Full` → parked path and the
//! re-registration paths (unit tests in core's supervisor).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use aether_core::options::ShareStatus;
use aether_tests::{Conn, Env, Origin, loopback};

use crate::common::SOON;

/// `share` with `legacy` against a legacy-handshake server: it comes online and serves.
pub fn legacy_client(env: &Env) {
    let origin = Origin::start();
    let mut opts = loopback();
    opts.legacy_handshake = true;
    let server = env.serve(opts);
    let mut share = env.share_options(&server, origin.port());
    share.legacy = true;
    share.max_conns = Some(2);
    let t = env.tunnel_with(&server, share);
    for i in 0..5 {
        let rest = format!("/legacy/{i}");
        let r = t.get(&rest);
        assert_eq!((r.status, r.header("x-echo-target")), (200, Some(rest.as_str())), "{}", r.text());
    }
}

/// Reads an HTTP request head (up to the blank line) off `s`.
fn read_head(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => got.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A localtunnel-style server: registration replies carry no `token`; the client's tunnel
/// connection must send nothing (no hello) and then carries a request to the origin and back.
pub fn tokenless_server(env: &Env) {
    let origin = Origin::start();
    let http = TcpListener::bind("127.0.0.1:0").expect("bind the fake server");
    let tunnel = TcpListener::bind("127.0.0.1:0").expect("bind the fake tunnel port");
    let tunnel_port = tunnel.local_addr().unwrap().port();
    let http_addr = http.local_addr().unwrap();
    let registrar = std::thread::spawn(move || {
        let (mut s, _) = http.accept().expect("the registration");
        let head = read_head(&mut s);
        let body = format!(
            r#"{{"id":"fake-tunnel","port":{tunnel_port},"max_conn_count":1,"url":"http://{http_addr}/fake-tunnel"}}"#
        );
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(reply.as_bytes());
        head
    });
    let share = env.share(aether_core::options::ShareOptions::new(&http_addr.to_string(), origin.port()));
    match share.wait_online(Duration::from_secs(10)) {
        ShareStatus::Online(url) => assert!(url.ends_with("/fake-tunnel"), "{url}"),
        other => panic!("the client did not come online: {other:?}"),
    }
    let head = registrar.join().expect("the registrar");
    assert!(head.starts_with("GET /?new"), "{head:?}");
    let (stream, _) = tunnel.accept().expect("a tunnel connection");
    let mut c = Conn::from_stream(stream);
    assert!(!c.closed_within(Duration::from_millis(300)), "the connection stays open");
    // Any hello line the client sent now sits ahead of the response and fails its parse below.
    c.send(b"GET /through HTTP/1.1\r\nHost: fake\r\n\r\n");
    c.set_read_timeout(SOON);
    let r = c.response("GET");
    assert_eq!((r.status, r.header("x-echo-target")), (200, Some("/through")), "{}", r.text());
}
