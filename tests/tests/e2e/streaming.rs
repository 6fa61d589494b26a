//! Cases 6–8: large bodies, server-sent events, and upgraded connections.

use std::sync::mpsc;
use std::time::Duration;

use aether_tests::{Conn, Env, Origin, Req, checksum, loopback, pattern, slack, wait_until};

use crate::common::{SOON, setup, upgrade};

/// 8 MiB up (Content-Length), 8 MiB down, and 4 MiB up in 64 KiB chunks, checksums equal.
pub fn large_upload_and_download(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let mut conn = t.connect();
    let n = 8 << 20;
    let up = pattern(n, 42);
    let r = conn
        .exchange(&t.host, &Req::new("POST", &t.target("/upload")).header("X-Sink", "1").body(up.clone()));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-echo-len"), Some(n.to_string().as_str()), "the origin got every byte");
    assert_eq!(r.header("x-echo-sum"), Some(format!("{:016x}", checksum(&up)).as_str()));

    let r = conn.exchange(&t.host, &Req::get(&t.target(&format!("/download/{n}"))));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), n);
    assert_eq!(r.header("x-sum"), Some(format!("{:016x}", checksum(&r.body)).as_str()));
    assert!(r.body == pattern(n, n as u64), "the download arrived unchanged");

    let chunks: Vec<Vec<u8>> = pattern(4 << 20, 7).chunks(64 * 1024).map(<[u8]>::to_vec).collect();
    let whole = chunks.concat();
    let r = conn.exchange(
        &t.host,
        &Req::new("PUT", &t.target("/upload-chunked")).header("X-Sink", "1").chunked(chunks),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-echo-framing"), Some("chunked"));
    assert_eq!(r.header("x-echo-len"), Some((4 << 20).to_string().as_str()));
    assert_eq!(r.header("x-echo-sum"), Some(format!("{:016x}", checksum(&whole)).as_str()));
}

/// Each server-sent event reaches the visitor before the origin is even told to send the next.
pub fn sse_arrives_incrementally(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let mut conn = t.connect();
    conn.send(&Req::get(&t.target("/sse")).header("Accept", "text/event-stream").encode(&t.host));
    conn.set_read_timeout(Duration::from_secs(3));
    let head = conn.response_head().expect("the SSE head arrives before any event");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    for i in 0..5 {
        s.origin.sse_send(&format!("event {i}"));
        let chunk = conn
            .read_chunk()
            .unwrap_or_else(|e| panic!("event {i} did not arrive on its own: {e}"))
            .expect("a data chunk");
        assert_eq!(String::from_utf8_lossy(&chunk), format!("data: event {i}\n\n"));
    }
    s.origin.sse_end();
    assert_eq!(conn.read_chunk().expect("the last chunk"), None);
    conn.set_read_timeout(Duration::from_secs(10));
    let r = conn.exchange(&t.host, &Req::get(&t.target("/after-sse")));
    assert_eq!(r.header("x-echo-target"), Some("/after-sse"), "the stream ended cleanly");
}

fn echo(conn: &mut Conn, msgs: std::ops::Range<usize>) {
    for i in msgs {
        let msg = format!("message {i} {}", "x".repeat(i % 61));
        conn.send(format!("{msg}\n").as_bytes());
        assert_eq!(conn.read_line().unwrap_or_else(|e| panic!("echo of message {i}: {e}")), msg);
    }
}

/// An upgraded connection echoes 1,000 messages while ordinary requests flow on another
/// visitor connection; afterwards the tunnel is back to its full pool.
pub fn upgrade_echo_beside_requests(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let (half, go_on) = mpsc::channel();
    let (plain_done, done) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut ws = upgrade(t, "/ws");
            echo(&mut ws, 0..500);
            half.send(()).unwrap();
            done.recv_timeout(slack(Duration::from_secs(20))).expect("the ordinary requests finished");
            echo(&mut ws, 500..1000);
            // A burst: 100 messages written at once, then read back in order.
            let burst: String = (0..100).map(|i| format!("burst {i}\n")).collect();
            ws.send(burst.as_bytes());
            for i in 0..100 {
                assert_eq!(ws.read_line().unwrap(), format!("burst {i}"));
            }
        });
        scope.spawn(move || {
            go_on.recv_timeout(slack(Duration::from_secs(20))).expect("the upgrade is under way");
            let mut conn = t.connect();
            for i in 0..100 {
                let r = conn.exchange(&t.host, &Req::get(&t.target(&format!("/beside/{i}"))));
                assert_eq!(r.status, 200, "ordinary request {i} during the upgrade");
            }
            plain_done.send(()).unwrap();
        });
    });
    assert_eq!(s.origin.hits("/ws"), 1);
    wait_until(SOON, "the full pool after the upgraded connection closed", || {
        s.server.connected(&t.id) == 10
    });
    assert_eq!(t.get("/after-ws").status, 200);
}

/// With one tunnel connection, an upgrade takes it out of the pool and the client dials a
/// fresh one: once the server holds it, ordinary requests get through (not a 504 after the
/// wait deadline).
pub fn upgrade_refills_pool(env: &Env) {
    let mut opts = loopback();
    opts.limits.wait_timeout = Duration::from_secs(3);
    let origin = Origin::start();
    let server = env.serve(opts);
    let mut share = env.share_options(&server, origin.port());
    share.max_conns = Some(1);
    let t = env.tunnel_with(&server, share);
    let mut ws = upgrade(&t, "/ws");
    echo(&mut ws, 0..10);
    // Until the redial lands the tunnel has no connection in its pool (an immediate 503 offline).
    wait_until(SOON, "the client's fresh tunnel connection", || server.connected(&t.id) == 1);
    for i in 0..5 {
        let r = t.get(&format!("/while-upgraded/{i}"));
        assert_eq!(
            r.status,
            200,
            "request {i} while the only tunnel connection is upgraded: {}server's view: {:?}",
            r.text(),
            server.tunnel_status(&t.id)
        );
    }
    echo(&mut ws, 10..20);
}
