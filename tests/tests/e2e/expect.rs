//! `Expect: 100-continue` beyond the happy path (audit M6): an origin that answers a final
//! status before the body without a 100, an origin that sends no 100 and waits for the body,
//! and an HTTP/1.0 visitor that sends `Expect` (RFC 9110 §10.1.1: ignored; §15.2: no 1xx to an
//! HTTP/1.0 client). Refused requests with `Expect` are in `requests::expect_on_refused`.

use std::time::Duration;

use aether_tests::{Env, Req, wait_until};

use crate::common::{SOON, setup};

/// The origin answers 413 at once, before any body and without a 100: the visitor gets the 413
/// without sending its body, its connection closes, and the tunnel is whole again.
pub fn origin_answers_early(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let before = s.server.connected(&t.id);
    let mut c = t.connect();
    c.send(
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nExpect: 100-continue\r\nX-Reject-Early: 413\r\nContent-Length: 5000\r\n\r\n",
            t.target("/upload"),
            t.host
        )
        .as_bytes(),
    );
    c.set_read_timeout(SOON);
    let r = c.try_response("POST").unwrap_or_else(|e| panic!("no early answer: {e}"));
    assert_eq!((r.status, r.text().as_str(), r.interim.as_slice()), (413, "early\n", &[][..]));
    assert!(c.closed_within(SOON), "the unsent body cannot be framed: the connection closes");
    wait_until(SOON, "the tunnel to hold its connections", || s.server.connected(&t.id) == before);
    for i in 0..5 {
        assert_eq!(t.get(&format!("/after/{i}")).status, 200);
    }
}

/// The origin sends no 100 and waits: a visitor that sends its body anyway gets the echo.
pub fn origin_sends_no_continue(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let mut c = t.connect();
    c.send(
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nExpect: 100-continue\r\nX-No-Continue: 1\r\nContent-Length: 5\r\n\r\n",
            t.target("/slow-continue"),
            t.host
        )
        .as_bytes(),
    );
    wait_until(SOON, "the head to reach the origin", || s.origin.hits("/slow-continue") == 1);
    c.send(b"hello");
    let r = c.response("POST");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(r.interim, Vec::<u16>::new(), "no 100 the origin did not send");
}

/// HTTP/1.0 with `Expect: 100-continue` and its body sent at once: answered, and no 1xx
/// response reaches the HTTP/1.0 visitor.
pub fn http10_expect(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let mut c = t.connect();
    let req = Req::new("POST", &t.target("/old")).http10().header("Expect", "100-continue").body("old body");
    c.send(&req.encode(&t.host));
    c.set_read_timeout(Duration::from_secs(5));
    let r = c.response("POST");
    assert_eq!((r.status, r.text().as_str()), (200, "old body"));
    assert_eq!(r.interim, Vec::<u16>::new(), "RFC 9110 §15.2: no 1xx to an HTTP/1.0 client");
}
