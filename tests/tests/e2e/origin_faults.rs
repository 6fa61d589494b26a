//! An origin (here: a hand-driven tunnel connection standing for client and origin) that
//! misbehaves on the response side (audit M5): bytes after a complete response, Content-Length
//! with Transfer-Encoding, an oversized response head, a 101 to a request that asked for no
//! upgrade, and an upgrade declined with 200. What the visitor sees, and that a connection
//! that carried garbage is closed rather than handed to the next visitor.

use aether_tests::{Conn, Env, Req, Response, Server, json_str};

use crate::common::SOON;

/// A hand-driven tunnel: its name, hello line and one accepted connection.
struct ByHand {
    name: &'static str,
    hello: String,
    conn: Conn,
}

impl ByHand {
    fn new(server: &Server, name: &'static str) -> ByHand {
        let r = server.fetch(&Req::get(&format!("/?new={name}")));
        assert_eq!(r.status, 200, "{}", r.text());
        let hello = format!("{name} {}\n", json_str(&r.text(), "token").expect("a token"));
        let conn = Self::dial(server, &hello);
        ByHand { name, hello, conn }
    }

    fn dial(server: &Server, hello: &str) -> Conn {
        let mut c = Conn::open(server.tunnel_addr());
        c.send(hello.as_bytes());
        assert_eq!(c.read_line().expect("a verdict"), "accepted");
        c
    }

    /// Replaces the connection with a fresh one.
    fn redial(&mut self, server: &Server) {
        self.conn = Self::dial(server, &self.hello);
    }

    /// A visitor sends `req` (target under the tunnel); its head is read off the tunnel
    /// connection, `answer` written back, and the visitor's connection returned unread.
    fn exchange(&mut self, server: &Server, req: Req, answer: &[u8]) -> Conn {
        let mut v = Conn::open(server.http_addr());
        let mut req = req;
        req.target = format!("/{}{}", self.name, req.target);
        v.send(&req.encode("h"));
        let first = self.conn.read_line().expect("the request down the tunnel");
        assert!(first.contains(&req.target[self.name.len() + 1..]), "{first:?}");
        while !self.conn.read_line().expect("the head").trim_end().is_empty() {}
        self.conn.send(answer);
        v
    }

    /// The connection still serves: a plain request goes through it.
    fn serves(&mut self, server: &Server, what: &str) {
        let mut v =
            self.exchange(server, Req::get("/next"), b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext");
        let r = v.response("GET");
        assert_eq!((r.status, r.text().as_str()), (200, "next"), "{what}");
    }
}

/// Reads the visitor's response; panics with `what` on failure.
fn answer(v: &mut Conn, method: &str, what: &str) -> Response {
    v.try_response(method).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Bytes after a complete response: the visitor gets that response alone, and the tunnel
/// connection is closed (its next bytes are unframed), never given to the next visitor.
pub fn extra_bytes_after_response(env: &Env) {
    let server = env.server();
    let mut t = ByHand::new(&server, "extra-bytes");
    let mut v = t.exchange(
        &server,
        Req::get("/x"),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!",
    );
    let r = answer(&mut v, "GET", "extra bytes");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    v.set_read_timeout(std::time::Duration::from_millis(300));
    assert!(v.try_response("GET").is_err(), "the second response is not relayed");
    assert!(t.conn.closed_within(SOON), "the tunnel connection that sent extra bytes is closed");
    t.redial(&server);
    t.serves(&server, "a fresh connection serves");
}

/// A response with both Content-Length and chunked: framed by Transfer-Encoding (RFC 9112 §6.3)
/// and forwarded without its Content-Length, or refused with 502; never framed by the length.
pub fn cl_and_te_response(env: &Env) {
    let server = env.server();
    let mut t = ByHand::new(&server, "cl-and-te");
    let mut v = t.exchange(
        &server,
        Req::get("/x"),
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    let r = answer(&mut v, "GET", "CL and TE");
    match r.status {
        200 => {
            assert_eq!(r.text(), "hello", "framed by Transfer-Encoding");
            assert_eq!(r.header("content-length"), None, "Content-Length removed before forwarding");
        }
        502 => assert!(t.conn.closed_within(SOON), "a refused response's connection is closed"),
        s => panic!("CL and TE: {s} {}", r.text()),
    }
}

/// A response head over `max_head`: 502 to the visitor, the tunnel connection closed.
pub fn oversized_response_head(env: &Env) {
    let mut opts = aether_tests::loopback();
    opts.limits.max_head = 4096;
    let server = env.serve(opts);
    let mut t = ByHand::new(&server, "big-head");
    let head = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n", "b".repeat(5000));
    let mut v = t.exchange(&server, Req::get("/x"), head.as_bytes());
    let r = answer(&mut v, "GET", "oversized head");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(t.conn.closed_within(SOON), "the tunnel connection is closed");
    t.redial(&server);
    t.serves(&server, "a fresh connection serves");
}

/// A 101 to a request that asked for no upgrade: 502, not a switch to raw bytes; the tunnel
/// connection closed.
pub fn unsolicited_101(env: &Env) {
    let server = env.server();
    let mut t = ByHand::new(&server, "unsolicited");
    let mut v = t.exchange(
        &server,
        Req::get("/x"),
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw",
    );
    let r = answer(&mut v, "GET", "unsolicited 101");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(t.conn.closed_within(SOON), "the tunnel connection is closed");
}

/// An upgrade the origin declines with 200: the visitor gets the 200 and its body, the
/// exchange stays HTTP, and the tunnel connection serves the next request.
pub fn upgrade_declined(env: &Env) {
    let server = env.server();
    let mut t = ByHand::new(&server, "declined");
    let req = Req::get("/ws").header("Connection", "Upgrade").header("Upgrade", "websocket");
    let mut v = t.exchange(&server, req, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
    let r = answer(&mut v, "GET", "declined upgrade");
    assert_eq!((r.status, r.text().as_str()), (200, "no"));
    t.serves(&server, "the declined upgrade's connection went back to the pool");
}
