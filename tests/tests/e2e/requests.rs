//! Visitor requests at the edges of SPEC §5: origin keep-alive reuse (audit M4), CONNECT
//! refused with 405, a smuggled request pipelined behind a valid one, a 408 on the second
//! request of a kept-alive connection, and `Expect: 100-continue` on a request the server
//! refuses itself (404, 503 offline, 503 queue full). Not covered: origins that answer
//! `Expect` early, or misbehave (those need new origin modes).

use std::time::{Duration, Instant};

use aether_tests::{Conn, Env, Origin, Req, json_num, json_str, loopback, wait_until};

use crate::common::{SOON, setup, setup_with};

/// 100 sequential requests on one visitor connection: the client reuses its origin
/// connections (at most one per tunnel connection) and the tunnel keeps its connections.
pub fn origin_keep_alive_reused(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let before = s.server.connected(&t.id);
    let mut c = t.connect();
    for i in 0..100 {
        let rest = format!("/ka/{i}");
        let r = c.exchange(&t.host, &Req::get(&t.target(&rest)));
        assert_eq!((r.status, r.header("x-echo-target")), (200, Some(rest.as_str())));
    }
    assert!(
        s.origin.connections() <= before,
        "{} origin connections for 100 requests over {before} tunnel connections: no reuse",
        s.origin.connections()
    );
    assert_eq!(s.server.connected(&t.id), before, "the tunnel kept its connections");
}

/// CONNECT is never proxied: 405, and nothing reaches the origin.
pub fn connect_405(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    for target in ["example.com:443".to_owned(), t.target("/x")] {
        let mut c = t.connect();
        c.send(format!("CONNECT {target} HTTP/1.1\r\nHost: {}\r\n\r\n", t.host).as_bytes());
        let r = c.try_response("CONNECT").unwrap_or_else(|e| panic!("CONNECT {target}: {e}"));
        assert_eq!(r.status, 405, "CONNECT {target}: {}", r.text());
    }
    assert_eq!(t.get("/sync").status, 200);
    assert_eq!(s.origin.requests(), 1, "only the sync request reached the origin");
}

/// A valid request pipelined ahead of an ambiguous (CL + TE) one on one connection: the first is
/// answered, the second refused with 400, the connection closed, and nothing of the second
/// reaches the origin.
pub fn pipelined_smuggle(env: &Env) {
    let origin = Origin::start();
    let server = env.server();
    let mut share = env.share_options(&server, origin.port());
    share.max_conns = Some(1);
    let t = env.tunnel_with(&server, share);
    let mut c = t.connect();
    let mut bytes = Req::get(&t.target("/first")).encode(&t.host);
    bytes.extend_from_slice(
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n\
             0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            t.target("/second"),
            t.host
        )
        .as_bytes(),
    );
    c.send(&bytes);
    let r = c.response("GET");
    assert_eq!((r.status, r.header("x-echo-target")), (200, Some("/first")));
    let r = c.response("POST");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(c.closed_within(SOON), "closed after the refusal");
    // One tunnel connection: once this is served, anything sent before it has arrived.
    assert_eq!(t.get("/sync").status, 200);
    let hits = origin.all_hits();
    assert_eq!(hits.len(), 2, "only /first and /sync reached the origin: {hits:?}");
}

/// The head deadline runs from the first byte of each head: the second request of a
/// kept-alive connection that stops halfway gets 408, not before the deadline, then a close.
pub fn second_request_408(env: &Env) {
    let mut opts = loopback();
    opts.limits.head_timeout = Duration::from_millis(400);
    let s = setup_with(env, opts);
    let t = &s.tunnel;
    let mut c = t.connect();
    assert_eq!(c.exchange(&t.host, &Req::get(&t.target("/one"))).status, 200);
    c.send(format!("GET {} HTTP/1.1\r\nHost: {}\r\n", t.target("/two"), t.host).as_bytes());
    let started = Instant::now();
    let r = c.response("GET");
    let took = started.elapsed();
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(took >= Duration::from_millis(350), "408 after only {took:?} (deadline 400 ms)");
    assert!(c.closed_within(SOON));
    assert_eq!(s.origin.hits("/two"), 0);
}

/// Sends a head with `Expect: 100-continue` and a body it never sends: the server must answer
/// `status` without a 100 and close, not wait for the body.
fn expect_refused(server_addr: std::net::SocketAddr, host: &str, target: &str, status: u16) {
    let mut c = Conn::open(server_addr);
    c.send(
        format!(
            "POST {target} HTTP/1.1\r\nHost: {host}\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n"
        )
        .as_bytes(),
    );
    c.set_read_timeout(SOON);
    let r = c.try_response("POST").unwrap_or_else(|e| panic!("{target}: no {status} before the body: {e}"));
    assert_eq!((r.status, r.interim.as_slice()), (status, &[][..]), "{target}: {}", r.text());
    assert!(c.closed_within(SOON), "{target}: closed, the unsent body is not awaited");
}

/// `Expect: 100-continue` on requests the server refuses itself: unknown tunnel (404), offline
/// tunnel (503), full queue (503). Each is answered at once and the connection closed.
pub fn expect_on_refused(env: &Env) {
    let mut opts = loopback();
    opts.limits.max_waiters = 1;
    let server = env.serve(opts);
    let host = server.http_addr().to_string();
    expect_refused(server.http_addr(), &host, "/no-such-tunnel/x", 404);

    let r = server.fetch(&Req::get("/?new=offline-one"));
    assert!(json_str(&r.text(), "token").is_some(), "{}", r.text());
    expect_refused(server.http_addr(), &host, "/offline-one/x", 503);

    let origin = Origin::start();
    let mut share = env.share_options(&server, origin.port());
    share.max_conns = Some(1);
    let t = env.tunnel_with(&server, share);
    let mut holder = t.connect();
    holder.send(&Req::get(&t.target("/hold")).encode(&t.host));
    wait_until(SOON, "the origin to hold the request", || origin.held() == 1);
    let mut waiter = t.connect();
    waiter.send(&Req::get(&t.target("/queued")).encode(&t.host));
    wait_until(SOON, "one request waiting", || {
        server.tunnel_status(&t.id).and_then(|st| json_num(&st, "waiting")) == Some(1)
    });
    expect_refused(server.http_addr(), &t.host, &t.target("/full"), 503);
    origin.release();
    assert_eq!(holder.response("GET").status, 200);
    assert_eq!(waiter.response("GET").status, 200);
    assert_eq!(origin.hits("/full"), 0);
}
