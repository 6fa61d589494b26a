//! Half-close (SPEC §5): a visitor that shuts down its sending side after a complete request
//! still gets the whole response, and the tunnel keeps every connection. Covers a lone
//! `Connection: close` request, a burst of them at once, a kept-alive connection's second
//! request, and a request with a body. Not covered here: half-close on an upgraded connection
//! (see `streaming`).

use aether_tests::{Conn, Env, Req, Tunnel, wait_until};

use crate::common::{SOON, setup};

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
