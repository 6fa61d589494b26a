//! Case 13: a party that knows only the tunnel's id (it is in the public URL) never gets a
//! visitor's request.

use std::time::Duration;

use aether_tests::{Conn, Env, Req, json_str, loopback};

use crate::common::{SOON, setup, setup_with};

/// Hellos without the token, with a wrong one, with another tunnel's, or for an unknown
/// tunnel are refused and closed, while the real client keeps serving every request.
pub fn handshake_needs_the_token(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let id = &t.id;
    let other = s.server.fetch(&Req::get("/?new=other-tunnel"));
    let other_token = json_str(&other.text(), "token").expect("a token");
    // (line, verdicts allowed: "" means closed without one)
    let tries: Vec<(String, &[&str])> = vec![
        (format!("{id}\n"), &["", "rejected bad-token\n"]),
        (format!("{id} {}\n", "0".repeat(32)), &["rejected bad-token\n"]),
        (format!("{id} {other_token}\n"), &["rejected bad-token\n"]),
        (format!("{id} not-a-token\n"), &["", "rejected bad-token\n"]),
        (format!("{id} {other_token} extra\n"), &["", "rejected bad-token\n"]),
        (format!("no-such-tunnel {other_token}\n"), &["rejected unknown-tunnel\n"]),
    ];
    let mut rogues: Vec<(String, &[&str], Conn)> = tries
        .into_iter()
        .map(|(line, allowed)| {
            let mut c = Conn::open(s.server.tunnel_addr());
            c.send(line.as_bytes());
            (line, allowed, c)
        })
        .collect();
    for i in 0..30 {
        let r = t.get(&format!("/v/{i}"));
        assert_eq!(r.status, 200, "visitor {i} served by the real client");
    }
    for (line, allowed, c) in &mut rogues {
        c.set_read_timeout(SOON);
        let got =
            c.read_to_end().unwrap_or_else(|e| panic!("{line:?}: the server kept the connection open: {e}"));
        let got = String::from_utf8_lossy(&got);
        assert!(allowed.contains(&got.as_ref()), "hello {line:?} got {got:?}, expected one of {allowed:?}");
    }
    assert_eq!(s.server.connected(id), 10, "no rogue connection joined the pool");
    let hits = s.origin.all_hits();
    assert_eq!(hits.len(), 30);
    assert!(hits.values().all(|&n| n == 1));
}

/// A tunnel connection that says nothing, or a line over the limit, is closed without a verdict.
pub fn silent_and_long_handshakes_closed(env: &Env) {
    let mut opts = loopback();
    opts.limits.handshake_timeout = Duration::from_millis(500);
    let s = setup_with(env, opts);
    let mut silent = Conn::open(s.server.tunnel_addr());
    let mut long = Conn::open(s.server.tunnel_addr());
    long.send(format!("{} {}\n", "a".repeat(300), "0".repeat(32)).as_bytes());
    let mut endless = Conn::open(s.server.tunnel_addr());
    endless.send("b".repeat(400).as_bytes());
    for (what, c) in [("silent", &mut silent), ("long line", &mut long), ("no newline", &mut endless)] {
        c.set_read_timeout(Duration::from_secs(3));
        let got = c.read_to_end().unwrap_or_else(|e| panic!("{what}: not closed: {e}"));
        assert_eq!(String::from_utf8_lossy(&got), "", "{what}: closed without a verdict");
    }
    assert_eq!(s.tunnel.get("/still").status, 200);
}
