//! The server's side of the tunnel protocol, driven by a hand-written client over raw
//! sockets: verdict lines, the request bytes that come down a tunnel connection, responses
//! written by hand (good, broken, cut short), `rejected full`, the legacy handshake.

use std::time::Duration;

use aether_tests::{Conn, Env, Req, Server, json_num, json_str, loopback, wait_until};

use crate::common::SOON;

/// Registers `name` over HTTP and returns its token.
fn register(server: &Server, name: &str) -> String {
    let r = server.fetch(&Req::get(&format!("/?new={name}")));
    assert_eq!(r.status, 200, "{}", r.text());
    json_str(&r.text(), "token").expect("a token")
}

/// Opens a tunnel connection and sends `line`.
fn dial(server: &Server, line: &str) -> Conn {
    let mut c = Conn::open(server.tunnel_addr());
    c.send(line.as_bytes());
    c
}

/// Reads one request head off a tunnel connection, lines without CRLF.
fn read_request_head(c: &mut Conn) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = c.read_line().expect("a request down the tunnel connection");
        let line = line.strip_suffix('\r').unwrap_or(&line).to_owned();
        if line.is_empty() {
            return lines;
        }
        lines.push(line);
    }
}

/// `accepted`, then `rejected full` past `max_conn_count`; a visitor's request comes down the
/// connection rewritten, the hand-written response goes back; the connection is reused;
/// once it closes the tunnel is offline (503) and a new connection is accepted again.
pub fn hand_driven_tunnel(env: &Env) {
    let mut opts = loopback();
    opts.limits.max_conn_per_tunnel = 1;
    let server = env.serve(opts);
    let reg = server.fetch(&Req::get("/?new=by-hand"));
    assert_eq!(json_num(&reg.text(), "max_conn_count"), Some(1));
    let token = json_str(&reg.text(), "token").unwrap();
    let hello = format!("by-hand {token}\n");
    let mut a = dial(&server, &hello);
    assert_eq!(a.read_line().unwrap(), "accepted");
    let mut full = dial(&server, &hello);
    assert_eq!(full.read_line().unwrap(), "rejected full");
    assert!(full.closed_within(SOON), "closed after a rejection");

    let mut visitor = Conn::open(server.http_addr());
    visitor
        .send(b"GET /by-hand/hello?x=1 HTTP/1.1\r\nHost: pub.example\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n");
    let head = read_request_head(&mut a);
    assert_eq!(head[0], "GET /hello?x=1 HTTP/1.1");
    for field in [
        "Host: pub.example",
        "X-Forwarded-For: 10.0.0.1, 127.0.0.1",
        "X-Forwarded-Proto: http",
        "X-Forwarded-Host: pub.example",
    ] {
        assert!(head.iter().any(|l| l.eq_ignore_ascii_case(field)), "{field:?} in {head:#?}");
    }
    a.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-By: hand\r\n\r\nhello");
    let r = visitor.response("GET");
    assert_eq!((r.status, r.text().as_str(), r.header("x-by")), (200, "hello", Some("hand")));

    // The same tunnel connection carries the next request: it went back to the pool.
    visitor.send(&Req::new("POST", "/by-hand/second").body("abc").encode("pub.example"));
    let head = read_request_head(&mut a);
    assert_eq!(head[0], "POST /second HTTP/1.1");
    assert_eq!(a.read_exact(3).unwrap(), b"abc", "the body follows the head");
    a.send(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
    let r = visitor.response("POST");
    assert_eq!((r.status, r.text().as_str()), (201, "ok"));

    drop(a);
    let r = poll_offline(&server, "/by-hand/x");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    let mut b = dial(&server, &hello);
    assert_eq!(b.read_line().unwrap(), "accepted", "the freed slot can be taken again");
}

fn poll_offline(server: &Server, target: &str) -> aether_tests::Response {
    aether_tests::poll_for(SOON, "503 once the only connection closed", || {
        let r = server.fetch(&Req::get(target));
        (r.status == 503).then_some(r)
    })
}

/// A response that is not HTTP gets the visitor a 502 and a closed connection; a response
/// cut short after it started ends the visitor's connection; other connections carry on.
pub fn broken_responses(env: &Env) {
    let server = env.server();
    let token = register(&server, "breaks");
    let hello = format!("breaks {token}\n");
    let mut a = dial(&server, &hello);
    assert_eq!(a.read_line().unwrap(), "accepted");

    let mut visitor = Conn::open(server.http_addr());
    visitor.send(&Req::get("/breaks/1").encode("h"));
    read_request_head(&mut a);
    a.send(b"this is not http\r\n\r\n");
    let r = visitor.response("GET");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(visitor.closed_within(SOON));
    assert!(a.closed_within(SOON), "the broken tunnel connection is closed");

    let mut b = dial(&server, &hello);
    assert_eq!(b.read_line().unwrap(), "accepted");
    let mut visitor = Conn::open(server.http_addr());
    visitor.send(&Req::get("/breaks/2").encode("h"));
    read_request_head(&mut b);
    b.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    drop(b);
    let e = visitor.try_response("GET").expect_err("a body cut short is not a complete response");
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");

    let mut c = dial(&server, &hello);
    assert_eq!(c.read_line().unwrap(), "accepted");
    let mut visitor = Conn::open(server.http_addr());
    visitor.send(&Req::get("/breaks/3").encode("h"));
    read_request_head(&mut c);
    c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(visitor.response("GET").text(), "ok");
}

/// With `--legacy-handshake`, the seed's bare `<id>` line is accepted with no verdict line and
/// requests come down it; the token form still gets its verdict.
pub fn legacy_handshake(env: &Env) {
    let mut opts = loopback();
    opts.legacy_handshake = true;
    let server = env.serve(opts);
    let token = register(&server, "old-client");
    let mut bare = dial(&server, "old-client\n");
    // No verdict comes back: the server's count says when the connection joined.
    wait_until(SOON, "the bare connection to join the tunnel", || server.connected("old-client") == 1);
    let mut visitor = Conn::open(server.http_addr());
    visitor.send(&Req::get("/old-client/legacy").encode("h"));
    let head = read_request_head(&mut bare);
    assert_eq!(head[0], "GET /legacy HTTP/1.1", "no verdict line before the request");
    bare.send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nold");
    assert_eq!(visitor.response("GET").text(), "old");

    let mut new = dial(&server, &format!("old-client {token}\n"));
    new.set_read_timeout(Duration::from_secs(5));
    assert_eq!(new.read_line().unwrap(), "accepted");
    let mut wrong = dial(&server, &format!("old-client {}\n", "0".repeat(32)));
    assert_eq!(wrong.read_line().unwrap(), "rejected bad-token");
}

/// `max_tunnels`: past it, registration answers 503 with a message.
pub fn tunnel_limit(env: &Env) {
    let mut opts = loopback();
    opts.limits.max_tunnels = 2;
    let server = env.serve(opts);
    register(&server, "first-one");
    register(&server, "second-one");
    let r = server.fetch(&Req::get("/?new"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(!r.text().trim().is_empty());
    assert_eq!(server.fetch(&Req::get("/?new=third-one")).status, 503);
}
