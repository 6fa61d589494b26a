//! Case 14 and the limits: ambiguous or oversized requests are refused with a clear 4xx
//! and never reach the origin; slow heads get 408; a busy tunnel queues, then 504 or 503.

use std::time::{Duration, Instant};

use aether_tests::{Env, Origin, Req, Tunnel, json_num, loopback, poll_for, slack, wait_until};

use crate::common::{SOON, at_deadline, setup_with};

/// Sends each raw request on a fresh connection: the expected status, then the connection closes.
fn refused(t: &Tunnel, cases: &[(&str, String, u16)]) {
    for (what, bytes, status) in cases {
        let mut conn = t.connect();
        conn.send(bytes.as_bytes());
        let r = conn.try_response("POST").unwrap_or_else(|e| panic!("{what}: no response: {e}"));
        assert_eq!(r.status, *status, "{what}: {}", r.text());
        assert!(conn.closed_within(SOON), "{what}: the visitor connection is closed");
    }
}

/// CL with TE, differing CLs, `chunked` twice or not last, unknown codings (501), obs-fold,
/// bare LF, bad header names, bad Content-Length: refused, closed, nothing at the origin.
pub fn ambiguous_heads_refused(env: &Env) {
    let (t, _server, origin) = one_conn_tunnel(env, 16, Duration::from_secs(10));
    let t = &t;
    let head =
        |fields: &str| format!("POST {} HTTP/1.1\r\nHost: {}\r\n{fields}\r\n", t.target("/amb"), t.host);
    let cases = [
        ("CL and TE", head("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n", 400),
        ("TE and CL", head("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n") + "0\r\n\r\n", 400),
        ("differing CLs", head("Content-Length: 3\r\nContent-Length: 4\r\n") + "abcd", 400),
        ("CL list", head("Content-Length: 3, 4\r\n") + "abcd", 400),
        ("chunked twice", head("Transfer-Encoding: chunked, chunked\r\n") + "0\r\n\r\n", 400),
        (
            "chunked in two fields",
            head("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n",
            400,
        ),
        ("chunked not last", head("Transfer-Encoding: chunked, gzip\r\n") + "0\r\n\r\n", 400),
        ("unknown coding", head("Transfer-Encoding: x-unknown\r\n") + "abc", 501),
        ("obs-fold", head("X-Folded: a\r\n b\r\nContent-Length: 0\r\n"), 400),
        ("bare LF", format!("GET {} HTTP/1.1\nHost: {}\n\n", t.target("/amb"), t.host), 400),
        ("empty field name", head(": v\r\n"), 400),
        ("space in field name", head("Bad Name: v\r\n"), 400),
        ("space before colon", head("X-Space : v\r\n"), 400),
        ("bad CL", head("Content-Length: abc\r\n"), 400),
        ("signed CL", head("Content-Length: +3\r\n") + "abc", 400),
    ];
    refused(t, &cases);
    // One tunnel connection: once this is served, anything sent before it has arrived.
    poll_for(SOON, "the tunnel to serve", || (t.get("/fine").status == 200).then_some(()));
    assert_eq!(
        origin.all_hits().keys().collect::<Vec<_>>(),
        vec!["/fine"],
        "nothing else reached the origin"
    );
}

/// A chunked body with a bad chunk size or extension: 400, closed, nothing at the origin.
///
/// One tunnel connection: a request after each refusal can only be served once the client
/// has finished with the connection that carried the bad one, so the origin's counters are
/// final when they are read.
pub fn bad_chunks_refused(env: &Env) {
    let (t, _server, origin) = one_conn_tunnel(env, 16, Duration::from_secs(10));
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        t.target("/chunk"),
        t.host
    );
    let cases = [
        ("non-hex chunk size", head.clone() + "zz\r\nabc\r\n0\r\n\r\n", 400),
        ("empty chunk size", head.clone() + "\r\nabc\r\n0\r\n\r\n", 400),
        ("chunk size overflow", head.clone() + "1ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n", 400),
        ("bad chunk extension", head.clone() + "3;\x01bad\r\nabc\r\n0\r\n\r\n", 400),
        ("data longer than its size", head.clone() + "3\r\nabcdef\r\n0\r\n\r\n", 400),
    ];
    let mut heads_seen = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        refused(&t, std::slice::from_ref(case));
        let sync = format!("/sync/{i}");
        // 503 "offline" until the client has replaced the closed connection.
        poll_for(SOON, "the tunnel to serve the next request", || (t.get(&sync).status == 200).then_some(()));
        assert_eq!(origin.completed(), i + 1, "{}: no malformed body was delivered whole", case.0);
        if origin.hits("/chunk") > heads_seen.len() {
            heads_seen.push(case.0);
        }
    }
    assert!(
        heads_seen.is_empty(),
        "the origin saw the head of a request whose body is malformed (SPEC §5: a clear 4xx, \
         nothing sent to the origin) for: {heads_seen:?}"
    );
}

/// A request line over the limit: 414; a head over the limit or too many fields: 431.
pub fn oversize_heads(env: &Env) {
    let mut opts = loopback();
    opts.limits.max_request_line = 1024;
    opts.limits.max_head = 4096;
    opts.limits.max_headers = 20;
    let origin = Origin::start();
    let server = env.serve(opts);
    let mut share = env.share_options(&server, origin.port());
    share.max_conns = Some(1);
    let t = &env.tunnel_with(&server, share);
    let long_target = t.target(&format!("/{}", "a".repeat(2000)));
    let many: String = (0..30).map(|i| format!("X-F{i}: v\r\n")).collect();
    let cases = [
        ("long request line", format!("GET {long_target} HTTP/1.1\r\nHost: {}\r\n\r\n", t.host), 414),
        (
            "big head",
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\n\r\n",
                t.target("/"),
                t.host,
                "b".repeat(5000)
            ),
            431,
        ),
        ("many fields", format!("GET {} HTTP/1.1\r\nHost: {}\r\n{many}\r\n", t.target("/"), t.host), 431),
    ];
    refused(t, &cases);
    let ok = t.fetch(&Req::get(&t.target(&format!("/{}", "a".repeat(900)))));
    assert_eq!(ok.status, 200, "under the limits");
    assert_eq!(origin.requests(), 1, "only the request under the limits reached the origin");
}

/// A head that stops arriving gets 408 at the head deadline (300 ms here), then a close; a
/// kept-alive connection that got its response and says nothing more is closed quietly at the
/// idle deadline (600 ms). Each comes at its own limit: not before it, not much after.
pub fn head_timeout_408(env: &Env) {
    let (head, idle) = (Duration::from_millis(300), Duration::from_millis(600));
    let mut opts = loopback();
    opts.limits.head_timeout = head;
    opts.limits.idle_keepalive = idle;
    let s = setup_with(env, opts);
    let t = &s.tunnel;
    let mut conn = t.connect();
    // Timed from before the first byte goes out, so the server's clock starts later.
    let started = Instant::now();
    conn.send(format!("GET {} HTTP/1.1\r\nHost: {}\r\n", t.target("/slow"), t.host).as_bytes());
    let r = conn.response("GET");
    let took = started.elapsed();
    assert_eq!(r.status, 408, "{}", r.text());
    at_deadline("408 for a head cut short", took, head);
    assert!(conn.closed_within(SOON));

    let mut quiet = t.connect();
    // From before the request: the idle clock starts once the response went out, later still.
    let asked = Instant::now();
    assert_eq!(quiet.exchange(&t.host, &Req::get(&t.target("/one"))).status, 200);
    assert!(quiet.closed_within(Duration::from_secs(3)), "an idle keep-alive connection is closed, silently");
    at_deadline("close of an idle keep-alive connection", asked.elapsed(), idle);
    assert_eq!(s.origin.hits("/slow"), 0);
}

fn one_conn_tunnel(env: &Env, max_waiters: usize, wait: Duration) -> (Tunnel, aether_tests::Server, Origin) {
    let mut opts = loopback();
    opts.limits.max_waiters = max_waiters;
    opts.limits.wait_timeout = wait;
    let origin = Origin::start();
    let server = env.serve(opts);
    let mut share = env.share_options(&server, origin.port());
    share.max_conns = Some(1);
    let t = env.tunnel_with(&server, share);
    (t, server, origin)
}

/// The only tunnel connection busy: a request waits for the deadline, then gets 504; the busy
/// request still completes and the tunnel serves again.
pub fn queue_timeout_504(env: &Env) {
    let (t, _server, origin) = one_conn_tunnel(env, 16, Duration::from_millis(400));
    let mut holder = t.connect();
    holder.send(&Req::get(&t.target("/hold")).encode(&t.host));
    wait_until(SOON, "the origin to hold the request", || origin.held() == 1);
    let started = Instant::now();
    let r = t.get("/queued");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(!r.text().trim().is_empty(), "504 with a message");
    assert!(took >= Duration::from_millis(350), "504 before the 400 ms wait deadline: {took:?}");
    // Far below the default wait deadline (30 s), which an ignored option would give.
    assert!(took < slack(SOON), "504 after {took:?}");
    assert_eq!(origin.hits("/queued"), 0);
    origin.release();
    let r = holder.response("GET");
    assert_eq!((r.status, r.text().as_str()), (200, "released\n"));
    assert_eq!(t.get("/after").status, 200);
}

/// The only tunnel connection busy and the queue full: the next request gets 503 at once; the
/// queued one is served when the connection frees up.
pub fn queue_full_503(env: &Env) {
    // A wait deadline no bound below reaches: a 503 that waited for it would be missed altogether.
    let (t, server, origin) = one_conn_tunnel(env, 1, slack(Duration::from_secs(60)));
    let mut holder = t.connect();
    holder.send(&Req::get(&t.target("/hold")).encode(&t.host));
    wait_until(SOON, "the origin to hold the request", || origin.held() == 1);
    let mut waiter = t.connect();
    waiter.send(&Req::get(&t.target("/queued")).encode(&t.host));
    wait_until(SOON, "one request waiting", || {
        server.tunnel_status(&t.id).and_then(|st| json_num(&st, "waiting")) == Some(1)
    });
    let started = Instant::now();
    let r = t.get("/rejected");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(started.elapsed() < slack(SOON), "503 at once, not after the wait deadline");
    assert!(!r.text().trim().is_empty(), "503 with a message");
    origin.release();
    assert_eq!(holder.response("GET").status, 200);
    let r = waiter.response("GET");
    assert_eq!((r.status, r.header("x-echo-target")), (200, Some("/queued")));
    assert_eq!(origin.hits("/rejected"), 0);
}

/// A visitor that gives up while its request waits for the busy tunnel leaves the queue at once:
/// its place frees up for others and its request never reaches the origin.
pub fn abandoned_waiter_leaves_the_queue(env: &Env) {
    let (t, server, origin) = one_conn_tunnel(env, 1, Duration::from_secs(10));
    let mut holder = t.connect();
    holder.send(&Req::get(&t.target("/hold")).encode(&t.host));
    wait_until(SOON, "the origin to hold the request", || origin.held() == 1);
    let waiting = || server.tunnel_status(&t.id).and_then(|st| json_num(&st, "waiting"));
    let mut quitter = t.connect();
    quitter.send(&Req::get(&t.target("/abandoned")).encode(&t.host));
    wait_until(SOON, "one request waiting", || waiting() == Some(1));
    // Only a reset says the visitor is gone: a FIN may be a half-close, still waiting for its answer.
    quitter.abort();
    wait_until(SOON, "the abandoned request to leave the queue", || waiting() == Some(0));
    // With a queue of one, a new request can wait again instead of getting 503.
    let mut next = t.connect();
    next.send(&Req::get(&t.target("/next")).encode(&t.host));
    wait_until(SOON, "the next request waiting", || waiting() == Some(1));
    origin.release();
    assert_eq!(holder.response("GET").status, 200);
    let r = next.response("GET");
    assert_eq!((r.status, r.header("x-echo-target")), (200, Some("/next")));
    assert_eq!(origin.hits("/abandoned"), 0, "the abandoned request never reached the origin");
}
