//! Limits at their value and one past it (SPEC §8, audit L1, e2e side): request line (414),
//! head bytes and field count (431), queue length (503), handshake line (close, no verdict),
//! offline grace (503 + `Retry-After`, then the name frees). Limits are set small so the cases
//! are quick. Not covered here: head and idle deadlines (`limits`, `requests`), `max_tunnels`
//! (`protocol::tunnel_limit`), handshake time (`security`).

use std::time::Duration;

use aether_core::options::ServeOptions;
use aether_tests::{Conn, Env, Origin, Req, Server, Tunnel, json_num, json_str, loopback, wait_until};

use crate::common::SOON;

/// A one-connection tunnel through a server with `opts`.
fn one_conn(env: &Env, opts: ServeOptions) -> (Tunnel, Server, Origin) {
    let origin = Origin::start();
    let server = env.serve(opts);
    let mut share = env.share_options(&server, origin.port());
    share.max_conns = Some(1);
    (env.tunnel_with(&server, share), server, origin)
}

/// Sends raw `bytes` on a fresh connection and returns the status of the answer.
fn status_of(t: &Tunnel, bytes: &[u8]) -> u16 {
    let mut c = t.connect();
    c.send(bytes);
    c.try_response("GET").unwrap_or_else(|e| panic!("no response: {e}")).status
}

/// A `GET` whose request line (CRLF excluded) is exactly `len` bytes.
fn line_of(t: &Tunnel, len: usize) -> String {
    let fixed = format!("GET {} HTTP/1.1", t.target("/"));
    format!("GET {}{} HTTP/1.1", t.target("/"), "a".repeat(len - fixed.len()))
}

/// Request line of exactly `max_request_line` bytes: served; one byte more: 414.
pub fn request_line(env: &Env) {
    let mut opts = loopback();
    opts.limits.max_request_line = 300;
    let (t, _server, origin) = one_conn(env, opts);
    let at = line_of(&t, 300);
    assert_eq!(at.len(), 300);
    assert_eq!(status_of(&t, format!("{at}\r\nHost: {}\r\n\r\n", t.host).as_bytes()), 200, "at the limit");
    let past = line_of(&t, 301);
    assert_eq!(status_of(&t, format!("{past}\r\nHost: {}\r\n\r\n", t.host).as_bytes()), 414, "one past");
    assert_eq!(origin.requests(), 1);
}

/// A head (blank line included) of exactly `max_head` bytes: served; one more: 431. The
/// origin's answer is small (`/status/200`): the server holds responses to the same limits.
pub fn head_bytes(env: &Env) {
    let mut opts = loopback();
    opts.limits.max_head = 1000;
    let (t, _server, origin) = one_conn(env, opts);
    let head_of = |len: usize| {
        let start = format!("GET {} HTTP/1.1\r\nHost: {}\r\nX-Pad: ", t.target("/status/200"), t.host);
        let pad = len - start.len() - 4;
        format!("{start}{}\r\n\r\n", "p".repeat(pad))
    };
    assert_eq!(head_of(1000).len(), 1000);
    assert_eq!(status_of(&t, head_of(1000).as_bytes()), 200, "at the limit");
    assert_eq!(status_of(&t, head_of(1001).as_bytes()), 431, "one past");
    assert_eq!(origin.requests(), 1);
}

/// Exactly `max_headers` fields (Host included): served; one more: 431.
pub fn header_count(env: &Env) {
    let mut opts = loopback();
    opts.limits.max_headers = 12;
    let (t, _server, origin) = one_conn(env, opts);
    let with = |fields: usize| {
        let extra: String = (1..fields).map(|i| format!("X-F{i}: v\r\n")).collect();
        format!("GET {} HTTP/1.1\r\nHost: {}\r\n{extra}\r\n", t.target("/status/200"), t.host)
    };
    assert_eq!(status_of(&t, with(12).as_bytes()), 200, "at the limit");
    assert_eq!(status_of(&t, with(13).as_bytes()), 431, "one past");
    assert_eq!(origin.requests(), 1);
}

/// `max_waiters` requests may wait behind a busy tunnel; the next one gets 503 at once.
pub fn queue_length(env: &Env) {
    let mut opts = loopback();
    opts.limits.max_waiters = 3;
    let (t, server, origin) = one_conn(env, opts);
    let waiting = || server.tunnel_status(&t.id).and_then(|st| json_num(&st, "waiting"));
    let mut holder = t.connect();
    holder.send(&Req::get(&t.target("/hold")).encode(&t.host));
    wait_until(SOON, "the origin to hold the request", || origin.held() == 1);
    let waiters: Vec<Conn> = (0..3)
        .map(|i| {
            let mut c = t.connect();
            c.send(&Req::get(&t.target(&format!("/wait/{i}"))).encode(&t.host));
            wait_until(SOON, &format!("{} waiting", i + 1), || waiting() == Some(i + 1));
            c
        })
        .collect();
    let r = t.get("/one-past");
    assert_eq!(r.status, 503, "{}", r.text());
    origin.release();
    assert_eq!(holder.response("GET").status, 200);
    for (i, mut c) in waiters.into_iter().enumerate() {
        let r = c.response("GET");
        assert_eq!((r.status, r.header("x-echo-target")), (200, Some(format!("/wait/{i}").as_str())));
    }
    assert_eq!(origin.hits("/one-past"), 0);
}

/// A hello line of exactly `max_handshake_line` bytes (newline included) is accepted; with a
/// limit one byte lower the same line is closed without a verdict.
pub fn handshake_line(env: &Env) {
    for (slack, accepted) in [(0, true), (1, false)] {
        let name = "line-limit-case";
        let probe = env.serve(loopback());
        let reg = probe.fetch(&Req::get(&format!("/?new={name}")));
        let token = json_str(&reg.text(), "token").expect("a token");
        let line = format!("{name} {token}\n");
        drop(probe);
        let mut opts = loopback();
        opts.limits.max_handshake_line = line.len() - slack;
        let server = env.serve(opts);
        let reg = server.fetch(&Req::get(&format!("/?new={name}")));
        let token = json_str(&reg.text(), "token").expect("a token");
        let line = format!("{name} {token}\n");
        let mut c = Conn::open(server.tunnel_addr());
        c.send(line.as_bytes());
        if accepted {
            assert_eq!(c.read_line().expect("a verdict"), "accepted", "a line at the limit");
        } else {
            let got = c.read_to_end().unwrap_or_default();
            assert!(got.is_empty(), "a line one past the limit: closed with no verdict, got {got:?}");
        }
    }
}

/// A tunnel whose connections are gone: 503 with `Retry-After` and the name held (409) during
/// the grace; after it the name frees and can be registered again.
pub fn offline_grace(env: &Env) {
    let mut opts = loopback();
    opts.limits.offline_grace = Duration::from_millis(1500);
    let server = env.serve(opts);
    let reg = server.fetch(&Req::get("/?new=graceful"));
    let token = json_str(&reg.text(), "token").expect("a token");
    let mut c = Conn::open(server.tunnel_addr());
    c.send(format!("graceful {token}\n").as_bytes());
    assert_eq!(c.read_line().unwrap(), "accepted");
    wait_until(SOON, "the connection to join", || server.connected("graceful") == 1);
    drop(c);
    let r = aether_tests::poll_for(SOON, "503 once offline", || {
        let r = server.fetch(&Req::get("/graceful/x"));
        (r.status == 503).then_some(r)
    });
    let after: u64 = r.header("retry-after").expect("Retry-After").trim().parse().expect("seconds");
    // SPEC names no value; a hint of 0 would invite a retry loop.
    assert!(after >= 1, "Retry-After {after}");
    assert_eq!(server.fetch(&Req::get("/?new=graceful")).status, 409, "held during the grace");
    wait_until(Duration::from_secs(10), "the name to free after the grace", || {
        server.fetch(&Req::get("/?new=graceful")).status == 200
    });
    assert_eq!(server.fetch(&Req::get("/graceful/x")).status, 503, "the new tunnel has no connections");
}
