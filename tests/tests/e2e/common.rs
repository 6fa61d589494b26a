//! What most cases start with, and the checks several groups share.

use std::time::Duration;

use aether_core::options::ServeOptions;
use aether_tests::{Conn, Env, Origin, Req, Server, Tunnel, loopback, slack};

/// A tunnel to a fresh origin through a fresh server (fields drop client first).
pub struct Setup {
    pub tunnel: Tunnel,
    pub server: Server,
    pub origin: Origin,
}

/// Default server options, one tunnel under a random name.
pub fn setup(env: &Env) -> Setup {
    setup_with(env, loopback())
}

/// `opts` for the server, one tunnel under a random name.
pub fn setup_with(env: &Env, opts: ServeOptions) -> Setup {
    let origin = Origin::start();
    let server = env.serve(opts);
    let tunnel = env.tunnel(&server, origin.port());
    Setup { tunnel, server, origin }
}

/// A short bound for things that should happen at once.
pub const SOON: Duration = Duration::from_secs(5);

/// How late past a deadline the server may act (its timer and scheduling), before slack.
pub const LATE: Duration = Duration::from_millis(250);

/// Checks that what the server did `took` after a deadline of `limit` started came at it: not
/// before `limit` (the spec's value, as given) and not after `slack(limit + LATE)`. Measure from
/// before the server could have started its clock, so a server on time is never early.
pub fn at_deadline(what: &str, took: Duration, limit: Duration) {
    eprintln!("{what}: after {took:?} for a {limit:?} deadline");
    assert!(took >= limit, "{what}: after {took:?}, before its {limit:?} deadline");
    let late = slack(limit + LATE);
    assert!(took <= late, "{what}: after {took:?}, later than {late:?} for a {limit:?} deadline");
}

/// Upgrades a fresh visitor connection to the origin path `rest` (`101`, `Upgrade: websocket`).
pub fn upgrade(t: &Tunnel, rest: &str) -> Conn {
    let mut conn = t.connect();
    let req = Req::get(&t.target(rest))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Version", "13");
    let r = conn.exchange(&t.host, &req);
    assert_eq!(r.status, 101, "{:?}", r.headers);
    assert_eq!(r.header("upgrade").map(str::to_ascii_lowercase).as_deref(), Some("websocket"));
    conn
}
