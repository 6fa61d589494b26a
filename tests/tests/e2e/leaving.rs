//! A visitor leaving at each point of its life (SPEC §5: "a visitor that leaves, at any
//! moment, never costs the tunnel a healthy connection"): while queued (reset or FIN), between
//! the grant and its first byte reaching the tunnel, halfway through its request body, and
//! partway through a large response. Afterwards the tunnel holds its connections again and the
//! next requests all succeed. A response whose visitor left is read to its end when the rest is
//! small and quick, and its connection kept; else that connection is closed. Not covered: leaving
//! during an upgrade (see `streaming`).

use std::io::{ErrorKind, Write};
use std::time::Instant;

use aether_core::relay::{DRAIN_BUDGET, DRAIN_TIME};
use aether_tests::{
    Conn, Env, Origin, Req, Server, Tunnel, json_num, json_str, loopback, pattern, slack, wait_until,
};

use crate::common::SOON;

/// A tunnel with `conns` connections through a fresh server and origin.
fn tunnel(env: &Env, conns: usize) -> (Tunnel, Server, Origin) {
    let origin = Origin::start();
    let server = env.server();
    let mut share = env.share_options(&server, origin.port());
    share.max_conns = Some(conns);
    (env.tunnel_with(&server, share), server, origin)
}

/// The tunnel is whole again: `conns` connections held and `n` fresh requests all answered.
fn still_whole(t: &Tunnel, server: &Server, conns: usize, what: &str) {
    wait_until(SOON, &format!("{what}: the tunnel to hold its {conns} connections"), || {
        server.connected(&t.id) == conns
    });
    for i in 0..10 {
        let rest = format!("/whole/{i}");
        let r = t.get(&rest);
        assert_eq!((r.status, r.header("x-echo-target")), (200, Some(rest.as_str())), "{what}: {}", r.text());
    }
}

/// Leaving while queued behind a busy tunnel: a reset leaves the queue and never reaches the
/// origin; a FIN is a half-close, so that request stays queued and is served to nobody; either
/// way the held request completes and the tunnel stays whole.
pub fn while_queued(env: &Env) {
    let (t, server, origin) = tunnel(env, 1);
    let waiting = || server.tunnel_status(&t.id).and_then(|st| json_num(&st, "waiting"));
    let mut holder = t.connect();
    holder.send(&Req::get(&t.target("/hold")).encode(&t.host));
    wait_until(SOON, "the origin to hold the request", || origin.held() == 1);

    let mut reset = t.connect();
    reset.send(&Req::get(&t.target("/reset")).encode(&t.host));
    wait_until(SOON, "one request waiting", || waiting() == Some(1));
    reset.abort();
    wait_until(SOON, "the reset visitor to leave the queue", || waiting() == Some(0));

    let mut fin = t.connect();
    fin.send(&Req::get(&t.target("/fin")).header("Connection", "close").encode(&t.host));
    wait_until(SOON, "one request waiting", || waiting() == Some(1));
    drop(fin);

    origin.release();
    assert_eq!(holder.response("GET").status, 200, "the held request completes");
    still_whole(&t, &server, 1, "after leaving the queue");
    assert_eq!(origin.hits("/reset"), 0, "a reset visitor's request never reaches the origin");
}

/// Registers `name` and returns its hello line.
fn hello(server: &Server, name: &str) -> String {
    let r = server.fetch(&Req::get(&format!("/?new={name}")));
    assert_eq!(r.status, 200, "{}", r.text());
    format!("{name} {}\n", json_str(&r.text(), "token").expect("a token"))
}

/// Opens a hand-driven tunnel connection and checks it is accepted.
fn dial(server: &Server, hello: &str) -> Conn {
    let mut c = Conn::open(server.tunnel_addr());
    c.send(hello.as_bytes());
    assert_eq!(c.read_line().expect("a verdict"), "accepted");
    c
}

/// The request line of the next request down a tunnel connection (its head read whole), or
/// `None` when the server closed the connection.
fn next_request(c: &mut Conn) -> Option<String> {
    let first = match c.read_line() {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::UnexpectedEof || e.kind() == ErrorKind::ConnectionReset => {
            return None;
        }
        Err(e) => panic!("reading the tunnel connection: {e}"),
    };
    while !c.read_line().expect("the rest of the head").trim_end().is_empty() {}
    Some(first)
}

/// Rounds of a visitor that resets right after sending its request, each racing its grant.
const ROUNDS: usize = 60;

/// Visitors that send a request and reset at once, on a tunnel of one hand-driven connection:
/// their cancel crosses the grant. The server must never close that connection unless it
/// carried the gone visitor's request; a check-in keeps it serving the next visitor.
pub fn between_grant_and_delivery(env: &Env) {
    let mut opts = loopback();
    opts.limits.max_conn_per_tunnel = 1;
    let server = env.serve(opts);
    let hello = hello(&server, "grant-race");
    let mut a = dial(&server, &hello);
    let (mut delivered, mut replaced) = (0, 0);
    for i in 0..ROUNDS {
        let mut gone = Conn::open(server.http_addr());
        gone.send(&Req::get(&format!("/grant-race/gone/{i}")).encode("h"));
        gone.abort();
        let mut attempt = 0;
        let sync_for = |attempt: usize| {
            let mut c = Conn::open(server.http_addr());
            c.send(&Req::get(&format!("/grant-race/sync/{i}/{attempt}")).encode("h"));
            c
        };
        let mut sync = sync_for(attempt);
        // Whether the connection carried a request whose visitor is gone since it was dialled.
        let mut carried_gone = false;
        loop {
            match next_request(&mut a) {
                Some(line) if line.contains(&format!("/sync/{i}/{attempt} ")) => {
                    a.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsync");
                    break;
                }
                Some(line) => {
                    // The gone visitor's request, or an abandoned sync attempt's: answer it.
                    assert!(line.contains("/gone/") || line.contains("/sync/"), "round {i}: {line:?}");
                    delivered += 1;
                    carried_gone = true;
                    a.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngone");
                }
                None => {
                    assert!(
                        carried_gone,
                        "round {i}: the server closed a healthy tunnel connection that carried no \
                         request of a visitor who left (SPEC §5: it goes back to the pool)"
                    );
                    // Replacing a connection that carried a gone visitor's request is allowed.
                    replaced += 1;
                    a = dial(&server, &hello);
                    carried_gone = false;
                    // The sync visitor may have had a 503 while the tunnel was offline: start over.
                    sync.abort();
                    attempt += 1;
                    sync = sync_for(attempt);
                }
            }
        }
        let r = sync.response("GET");
        assert_eq!((r.status, r.text().as_str()), (200, "sync"), "round {i}");
    }
    eprintln!("{ROUNDS} rounds: {delivered} gone requests delivered, {replaced} connections replaced");
    assert!(replaced <= delivered);
}

/// A visitor that sends half of its body and goes (FIN, then reset): the exchange is cut, the
/// client replaces the connection, and the tunnel serves on.
pub fn mid_request(env: &Env) {
    let (t, server, origin) = tunnel(env, 2);
    for abort in [false, true] {
        let mut c = t.connect();
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 200000\r\n\r\n",
            t.target("/half"),
            t.host
        );
        c.send(head.as_bytes());
        c.send(&aether_tests::pattern(100_000, 3));
        wait_until(SOON, "the half-sent request to reach the origin", || {
            origin.hits("/half") > usize::from(abort)
        });
        if abort {
            c.abort()
        } else {
            drop(c)
        }
        still_whole(&t, &server, 2, if abort { "after a reset mid-body" } else { "after a FIN mid-body" });
    }
    assert_eq!(origin.hits("/half"), 2);
}

/// A visitor that reads part of an 8 MB response and goes: the tunnel is whole again.
pub fn mid_response(env: &Env) {
    let (t, server, _origin) = tunnel(env, 2);
    for abort in [false, true] {
        let mut c = t.connect();
        c.send(&Req::get(&t.target("/download/8000000")).encode(&t.host));
        let r = c.response_head().expect("the response head");
        assert_eq!(r.status, 200);
        c.read_exact(100_000).expect("the start of the body");
        if abort {
            c.abort()
        } else {
            drop(c)
        }
        still_whole(
            &t,
            &server,
            2,
            if abort { "after a reset mid-response" } else { "after a FIN mid-response" },
        );
    }
}

/// A request queued behind a large download on a tunnel of one connection, whose visitor resets
/// partway: the connection that carried the download is replaced by the client, and the queued
/// request waits for the replacement and is served (not refused as "tunnel offline": the client
/// never left).
pub fn queued_behind_a_leaver(env: &Env) {
    let (t, server, _origin) = tunnel(env, 1);
    let waiting = || server.tunnel_status(&t.id).and_then(|st| json_num(&st, "waiting"));
    for round in 0..3 {
        let mut leaver = t.connect();
        leaver.send(&Req::get(&t.target("/download/8000000")).encode(&t.host));
        assert_eq!(leaver.response_head().expect("the download's head").status, 200);
        leaver.read_exact(100_000).expect("the start of the download");

        let mut queued = t.connect();
        let rest = format!("/queued/{round}");
        queued.send(&Req::get(&t.target(&rest)).encode(&t.host));
        wait_until(SOON, "the second request to queue", || waiting() == Some(1));
        leaver.abort();
        let r = queued.response("GET");
        assert_eq!(
            (r.status, r.header("x-echo-target")),
            (200, Some(rest.as_str())),
            "round {round}: {}",
            r.text()
        );
    }
    still_whole(&t, &server, 1, "after the queued requests");
}

/// A server whose tunnel `name` has one hand-driven connection, and that connection.
fn hand_tunnel(env: &Env, name: &str) -> (Server, Conn) {
    let mut opts = loopback();
    opts.limits.max_conn_per_tunnel = 1;
    let server = env.serve(opts);
    let a = dial(&server, &hello(&server, name));
    (server, a)
}

/// Body bytes the visitor is sent before it leaves.
const FIRST: usize = 16 * 1024;

/// `data` as one chunk of a chunked body.
fn chunk(data: &[u8]) -> Vec<u8> {
    [format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat()
}

/// A visitor asks tunnel `name` for `rest`; the hand connection `a` answers with `head` and
/// `first`; the visitor reads the head and part of the body, then resets.
fn leave_midway(server: &Server, a: &mut Conn, name: &str, rest: &str, head: &str, first: &[u8]) {
    let mut v = Conn::open(server.http_addr());
    v.send(&Req::get(&format!("/{name}{rest}")).encode("h"));
    let line = next_request(a).expect("the visitor's request down the tunnel connection");
    assert!(line.contains(&format!("{rest} ")), "{line:?}");
    a.send(head.as_bytes());
    a.send(first);
    assert_eq!(v.response_head().expect("the response head").status, 200);
    v.read_exact(1000).expect("the start of the body");
    v.abort();
}

/// A second visitor's request comes down the same connection `a`, and its answer reaches it.
fn serves_next(server: &Server, a: &mut Conn, name: &str, what: &str) {
    let mut v = Conn::open(server.http_addr());
    v.send(&Req::get(&format!("/{name}/next")).encode("h"));
    let line = next_request(a);
    assert!(
        line.as_ref().is_some_and(|l| l.contains("/next ")),
        "{what}: the next request did not come down the same tunnel connection ({line:?}); a \
         visitor that left before a small rest of its response cost the tunnel it (SPEC §5)"
    );
    a.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext");
    let r = v.response("GET");
    assert_eq!((r.status, r.text().as_str()), (200, "next"), "{what}");
}

/// A visitor leaves partway through a response whose rest (a quarter of the drain budget, by
/// Content-Length, then chunked) comes after it left: the server reads the rest past, and the
/// same tunnel connection carries the next visitor's request.
pub fn rest_drained(env: &Env) {
    let (server, mut a) = hand_tunnel(env, "drain");
    let pieces: Vec<Vec<u8>> = (0..16).map(|i| pattern(DRAIN_BUDGET / 64, i)).collect();
    let total = FIRST + pieces.iter().map(Vec::len).sum::<usize>();
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n");
    leave_midway(&server, &mut a, "drain", "/length", &head, &pattern(FIRST, 99));
    // Several writes after the reset: the server learns the visitor left when one to it fails. A
    // failed write here is the server closing the connection, which `serves_next` reports.
    for piece in &pieces {
        if a.try_send(piece).is_err() {
            break;
        }
    }
    serves_next(&server, &mut a, "drain", "by Content-Length");

    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    leave_midway(&server, &mut a, "drain", "/chunked", head, &chunk(&pattern(FIRST, 98)));
    let rest = pieces.iter().map(|p| chunk(p)).chain([b"0\r\n\r\n".to_vec()]);
    for piece in rest {
        if a.try_send(&piece).is_err() {
            break;
        }
    }
    serves_next(&server, &mut a, "drain", "chunked");
}

/// After `write` (run beside, since the server may close meanwhile) the server has closed the
/// hand connection `a` rather than kept it: a next visitor's request never comes down it.
fn closes(server: &Server, a: &mut Conn, name: &str, what: &str, write: impl FnOnce(&mut dyn Write) + Send) {
    let mut out = a.stream().try_clone().expect("clone the tunnel connection");
    std::thread::scope(|s| {
        s.spawn(move || write(&mut out));
    });
    let mut v = Conn::open(server.http_addr());
    v.send(&Req::get(&format!("/{name}/next")).encode("h"));
    let line = next_request(a);
    assert!(line.is_none(), "{what}: the server kept the tunnel connection and sent {line:?} down it");
}

/// A visitor leaves partway through a response whose rest is twice the drain budget: the server
/// closes that tunnel connection instead of reading it all.
pub fn rest_over_budget(env: &Env) {
    let (server, mut a) = hand_tunnel(env, "drain-over");
    let rest = 2 * DRAIN_BUDGET;
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", FIRST + rest);
    leave_midway(&server, &mut a, "drain-over", "/big", &head, &pattern(FIRST, 97));
    let piece = pattern(64 * 1024, 96);
    closes(&server, &mut a, "drain-over", "a rest over the budget", |out| {
        // Until the server closes (a write fails) or all of it went.
        for _ in 0..rest / piece.len() {
            if out.write_all(&piece).is_err() {
                break;
            }
        }
    });
}

/// A visitor leaves partway through an event stream that then sends a small chunk every 20 ms:
/// the server closes that tunnel connection once the drain's time is up instead of reading on.
pub fn rest_too_slow(env: &Env) {
    let (server, mut a) = hand_tunnel(env, "drain-slow");
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    leave_midway(&server, &mut a, "drain-slow", "/events", head, &chunk(&pattern(FIRST, 95)));
    closes(&server, &mut a, "drain-slow", "a trickling rest", |out| {
        let until = Instant::now() + slack(4 * DRAIN_TIME);
        while Instant::now() < until {
            if out.write_all(&chunk(b"beat\n")).is_err() {
                return;
            }
            // The origin's pace, not a wait for a condition.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Still open: end the stream, so a server that kept reading would keep the connection.
        let _ = out.write_all(b"0\r\n\r\n");
    });
}
