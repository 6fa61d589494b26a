//! Case 13: a party that knows only the tunnel's id (it is in the public URL) never gets a
//! visitor's request.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aether_tests::{Conn, Env, Req, json_str, loopback, wait_until};

use crate::common::{SOON, at_deadline, setup, setup_with};

/// Hellos without the token, with a wrong one, with another tunnel's, or for an unknown
/// tunnel are refused and closed, one at a time while a visitor keeps sending requests, and the
/// real client serves every request. SPEC §4 gives each line exactly one answer: a token that
/// is not this tunnel's, whatever its form (none, another's, not hex, wrong length), gets
/// `rejected bad-token`; an unknown tunnel `rejected unknown-tunnel`; a line that is not
/// `<id> <token>` no verdict.
pub fn handshake_needs_the_token(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let id = &t.id;
    let other = s.server.fetch(&Req::get("/?new=other-tunnel"));
    let other_token = json_str(&other.text(), "token").expect("a token");
    let bad_token = "rejected bad-token\n";
    let tries: Vec<(String, &str)> = vec![
        (format!("{id}\n"), bad_token),
        (format!("{id} {}\n", "0".repeat(32)), bad_token),
        (format!("{id} {other_token}\n"), bad_token),
        (format!("{id} not-a-token\n"), bad_token),
        (format!("{id} {}\n", &other_token[..31]), bad_token),
        (format!("{id} {other_token} extra\n"), ""),
        (format!("no-such-tunnel {other_token}\n"), "rejected unknown-tunnel\n"),
    ];
    let served = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (served, stop) = (&served, &stop);
    let visits = std::thread::scope(|scope| {
        let visitor = scope.spawn(move || {
            let mut wrong = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) && i < 2000 {
                let path = format!("/v/{i}");
                let r = t.get(&path);
                if (r.status, r.header("x-echo-target")) != (200, Some(path.as_str())) {
                    wrong.push(format!("{path}: {} {}", r.status, r.text()));
                }
                i += 1;
                served.store(i, Ordering::SeqCst);
            }
            (i, wrong)
        });
        let _stop = StopOnDrop(stop);
        for (line, want) in &tries {
            // Visitor requests before each hello, so any rogue connection let in would get one.
            let from = served.load(Ordering::SeqCst);
            wait_until(SOON, "visitor requests between two hellos", || {
                served.load(Ordering::SeqCst) >= from + 3
            });
            let mut c = Conn::open(s.server.tunnel_addr());
            c.send(line.as_bytes());
            c.set_read_timeout(SOON);
            let got = c
                .read_to_end()
                .unwrap_or_else(|e| panic!("{line:?}: the server kept the connection open: {e}"));
            assert_eq!(String::from_utf8_lossy(&got), *want, "the answer to hello {line:?}");
        }
        let from = served.load(Ordering::SeqCst);
        wait_until(SOON, "visitor requests after the last hello", || {
            served.load(Ordering::SeqCst) >= from + 3
        });
        stop.store(true, Ordering::SeqCst);
        visitor.join().expect("the visitor")
    });
    let (n, wrong) = visits;
    assert!(wrong.is_empty(), "visitors not served by the real client: {wrong:#?}");
    assert_eq!(s.server.connected(id), 10, "no rogue connection joined the pool");
    let hits = s.origin.all_hits();
    assert_eq!(hits.len(), n, "every visitor request reached the origin");
    assert!(hits.values().all(|&n| n == 1));
}

/// Ends the visitor loop however the hellos' part ends (a failed assertion included).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A tunnel connection that says nothing, or only part of its line, is closed without a verdict
/// at the handshake deadline (SPEC §4, §8; 800 ms here): not before it, not much after. The
/// deadline runs from the connection, not from the last byte: a line whose second part comes
/// halfway through is closed at the same time. A line over the limit is closed at once.
pub fn silent_and_long_handshakes_closed(env: &Env) {
    let limit = Duration::from_millis(800);
    let mut opts = loopback();
    opts.limits.handshake_timeout = limit;
    // The clock that says "halfway": a visitor's partial head gets its 408 then.
    opts.limits.head_timeout = limit / 2;
    let s = setup_with(env, opts);
    let id = &s.tunnel.id;
    let opened = Instant::now();
    let mut silent = Conn::open(s.server.tunnel_addr());
    let mut half = Conn::open(s.server.tunnel_addr());
    half.send(format!("{id} 0123456789abcdef").as_bytes());
    let mut trickled = Conn::open(s.server.tunnel_addr());
    trickled.send(id.as_bytes());
    let mut long = Conn::open(s.server.tunnel_addr());
    long.send(format!("{} {}\n", "a".repeat(300), "0".repeat(32)).as_bytes());
    let mut endless = Conn::open(s.server.tunnel_addr());
    endless.send("b".repeat(400).as_bytes());
    for (what, c) in [("long line", &mut long), ("no newline", &mut endless)] {
        c.set_read_timeout(limit / 2);
        let got = c.read_to_end().unwrap_or_else(|e| panic!("{what}: not closed at once: {e}"));
        assert_eq!(String::from_utf8_lossy(&got), "", "{what}: closed without a verdict");
    }
    let mut slow = s.tunnel.connect();
    slow.send(format!("GET {} HTTP/1.1\r\n", s.tunnel.target("/slow")).as_bytes());
    assert_eq!(slow.response("GET").status, 408, "the halfway clock");
    assert!(opened.elapsed() < limit, "halfway came after the deadline: {:?}", opened.elapsed());
    trickled.send(b" 0123456789abcdef");
    for (what, c) in [("silent", &mut silent), ("half a line", &mut half), ("trickled line", &mut trickled)] {
        // Below the default handshake deadline (5 s), which an ignored option would give.
        c.set_read_timeout(Duration::from_secs(3));
        let got = c.read_to_end().unwrap_or_else(|e| panic!("{what}: not closed: {e}"));
        let took = opened.elapsed();
        assert_eq!(String::from_utf8_lossy(&got), "", "{what}: closed without a verdict");
        at_deadline(what, took, limit);
    }
    assert_eq!(s.tunnel.get("/still").status, 200);
}
