//! Half-close (SPEC §5): a visitor that shuts down its sending side after a complete request
//! still gets the whole response, and the tunnel keeps every connection. Covers a lone
//! `Connection: close` request, a burst of them at once, a kept-alive connection's second
//! request, and a request with a body; and, on an upgraded connection (raw bytes both ways), a
//! half-close from either end passed on while the other direction keeps flowing.

use aether_tests::origin::upgraded::HANG_UP_LINE;
use aether_tests::{Conn, Env, Req, Tunnel, poll_for, wait_until};

use crate::common::{SOON, setup, upgrade};

/// Visitors per run, one by one and then at once.
const VISITORS: usize = 50;

/// Sends `GET <rest>` with `Connection: close` on a fresh connection, shuts down writing, and
/// returns the connection to read the answer from.
fn half_closed_get(t: &Tunnel, rest: &str) -> Conn {
    let mut c = t.connect();
    c.send(&Req::get(&t.target(rest)).header("Connection", "close").encode(&t.host));
    c.shutdown_write();
    c
}

/// Checks one half-closed visitor got its own complete echo.
fn answered(c: &mut Conn, rest: &str) -> Result<(), String> {
    let r = c.try_response("GET").map_err(|e| format!("{rest}: no complete response: {e}"))?;
    if (r.status, r.header("x-echo-target")) != (200, Some(rest)) {
        return Err(format!("{rest}: {} {:?}", r.status, r.header("x-echo-target")));
    }
    Ok(())
}

/// 50 visitors, one after another, each half-closing after its request: all answered, and the
/// tunnel still holds all its connections.
pub fn one_by_one(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let before = s.server.connected(&t.id);
    let failed: Vec<String> = (0..VISITORS)
        .filter_map(|i| {
            let rest = format!("/hc/{i}");
            answered(&mut half_closed_get(t, &rest), &rest).err()
        })
        .collect();
    assert!(failed.is_empty(), "{} of {VISITORS} half-closed visitors unanswered: {failed:?}", failed.len());
    assert_eq!(s.origin.requests(), VISITORS, "each request reached the origin once");
    wait_until(SOON, "the tunnel to keep its connections", || s.server.connected(&t.id) == before);
}

/// 50 visitors at once, each half-closing after its request: all answered (most of them wait
/// in the queue first), and the tunnel still holds all its connections.
pub fn at_once(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let before = s.server.connected(&t.id);
    let failed: Vec<String> = std::thread::scope(|scope| {
        let visitors: Vec<_> = (0..VISITORS)
            .map(|i| {
                scope.spawn(move || {
                    let rest = format!("/burst/{i}");
                    answered(&mut half_closed_get(t, &rest), &rest).err()
                })
            })
            .collect();
        visitors.into_iter().filter_map(|v| v.join().expect("a visitor thread")).collect()
    });
    assert!(failed.is_empty(), "{} of {VISITORS} half-closed visitors unanswered: {failed:?}", failed.len());
    wait_until(SOON, "the tunnel to keep its connections", || s.server.connected(&t.id) == before);
    let r = t.get("/after");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Half-close after the second request of a kept-alive connection, and after a request with a
/// Content-Length and a chunked body: each gets its whole response, then the server closes.
pub fn after_keep_alive_and_body(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let before = s.server.connected(&t.id);

    let mut c = t.connect();
    let r = c.exchange(&t.host, &Req::get(&t.target("/first")));
    assert_eq!((r.status, r.closes()), (200, false), "kept alive");
    c.send(&Req::get(&t.target("/second")).encode(&t.host));
    c.shutdown_write();
    let r = c.response("GET");
    assert_eq!((r.status, r.header("x-echo-target")), (200, Some("/second")));
    assert!(c.closed_within(SOON), "closed once the half-closed visitor's last response went out");

    let body = aether_tests::pattern(40_000, 7);
    for req in [
        Req::new("POST", &t.target("/length")).body(body.clone()),
        Req::new("POST", &t.target("/chunked-body")).chunked(body.chunks(7000).map(<[u8]>::to_vec).collect()),
    ] {
        let mut c = t.connect();
        c.send(&req.encode(&t.host));
        c.shutdown_write();
        let r = c.response("POST");
        assert_eq!(r.status, 200, "{}: {}", req.target, r.text());
        assert!(
            r.body == body,
            "{}: the whole body came back ({} of {} bytes)",
            req.target,
            r.body.len(),
            body.len()
        );
        assert!(c.closed_within(SOON));
    }
    wait_until(SOON, "the tunnel to keep its connections", || s.server.connected(&t.id) == before);
}

/// After a 101 through the tunnel the visitor shuts down its sending side: the origin reads end
/// of stream (only then does it say its last word, which counts every byte it got), the last
/// word still reaches the visitor, and then the visitor reads end of stream.
pub fn upgraded_visitor_half_closes(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let mut ws = upgrade(t, "/upgrade/last-word");
    ws.set_read_timeout(SOON);
    let mut sent = 0;
    for i in 0..20 {
        let msg = format!("message {i}");
        ws.send(format!("{msg}\n").as_bytes());
        sent += msg.len() + 1;
        assert_eq!(ws.read_line().unwrap_or_else(|e| panic!("echo of message {i}: {e}")), msg);
    }
    ws.shutdown_write();
    let last =
        ws.read_line().unwrap_or_else(|e| panic!("the origin's word after the visitor's half-close: {e}"));
    assert_eq!(last, format!("bye after {sent} bytes"), "the origin saw end of stream after every byte");
    assert!(ws.closed_within(SOON), "the visitor reads end of stream once the origin closed");
    wait_until(SOON, "the full pool after the upgraded connection", || s.server.connected(&t.id) == 10);
    assert_eq!(t.get("/after").status, 200);
}

/// After a 101 the origin shuts down its sending side first: the visitor reads its last line and
/// end of stream, yet still sends, and the origin receives every byte until the visitor's own
/// half-close.
pub fn upgraded_origin_half_closes(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let mut ws = upgrade(t, "/upgrade/hang-up-first");
    ws.set_read_timeout(SOON);
    assert_eq!(ws.read_line().expect("the origin's last line"), HANG_UP_LINE);
    assert!(ws.closed_within(SOON), "the origin's half-close reaches the visitor as end of stream");
    let said: String = (0..200).map(|i| format!("still talking {i}\n")).collect();
    for part in said.as_bytes().chunks(700) {
        ws.try_send(part)
            .unwrap_or_else(|e| panic!("the visitor can no longer send after the origin's half-close: {e}"));
    }
    ws.shutdown_write();
    let heard =
        poll_for(SOON, "the origin to read the visitor's end of stream", || s.origin.heard_after_hang_up());
    assert!(
        heard == said.as_bytes(),
        "the origin got {} of the {} bytes sent after its half-close",
        heard.len(),
        said.len()
    );
    wait_until(SOON, "the full pool after the upgraded connection", || s.server.connected(&t.id) == 10);
    assert_eq!(t.get("/after").status, 200);
}
