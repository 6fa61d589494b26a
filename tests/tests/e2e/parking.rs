//! `rejected full` (SPEC §4: "`full` means stop dialling until a connection drops"): a client
//! whose tunnel already holds `max_conn_count` connections does not keep redialling, and fills
//! the pool again once one of its connections drops.
//!
//! The client's dials are counted by a [`Proxy`] in front of the tunnel port; a small stand-in
//! registration endpoint gives the client the server's real reply with the proxy's port in it.
//! Not covered: a place freed by another party's connection (the client cannot see that close;
//! only its parked slot's retry timer finds the place, see `core::supervisor`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aether_core::options::{Report, ShareOptions, ShareStatus};
use aether_core::supervisor::{ClientEvent, RetryReason};
use aether_tests::{Conn, Env, Origin, Proxy, Req, json_num, json_str, loopback, poll_for, wait_until};

use crate::common::{LATE, SOON};

/// Dials while parked beyond which the client is redialling, not parked. A busy loop makes
/// hundreds a second; the parked slot's retry timer (its backoff: up to 250 ms, doubling) makes
/// a handful before it announces a retry [`FAR`] off.
const BUSY: usize = 20;
/// A retry this far off tells a redial caused by a drop from one made by the parked slot's timer.
const FAR: Duration = Duration::from_secs(1);

/// Answers every registration call with one fixed 200 reply body, and counts the calls.
struct Registrar {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Registrar {
    fn answering(body: String) -> Registrar {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the registrar");
        let addr = listener.local_addr().expect("registrar address");
        let (calls, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (count, stopping) = (calls.clone(), stop.clone());
        std::thread::spawn(move || {
            for s in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(SOON));
                // The call is one head with no body: read up to its blank line.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match s.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes());
            }
        });
        Registrar { addr, calls, stop }
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// A tunnel with two places, one taken by a hand-dialled connection that carries a request
/// nobody answers (so visitors reach only the client's connections): the client gets one place
/// and `rejected full` on its other dial. While the pool stays full it does not keep dialling:
/// only its parked slot's retry timer dials (never more than [`BUSY`] times) until that slot
/// announces a retry at least [`FAR`] off, and it never registers again. Then its live
/// connection drops (a close-delimited response ends it): it dials again at once, well before
/// that timer, the next visitor is served through the new connection, and the pool is back at two.
pub fn client_parks_on_full(env: &Env) {
    let name = "parked-client";
    let mut opts = loopback();
    opts.limits.max_conn_per_tunnel = 2;
    let server = env.serve(opts);
    let origin = Origin::start();
    let reg = server.fetch(&Req::get(&format!("/?new={name}"))).text();
    let token = json_str(&reg, "token").expect("a token");
    assert_eq!(json_num(&reg, "max_conn_count"), Some(2), "{reg}");

    let mut held = Conn::open(server.tunnel_addr());
    held.send(format!("{name} {token}\n").as_bytes());
    assert_eq!(held.read_line().expect("a verdict"), "accepted");
    wait_until(SOON, "the hand-dialled connection to join", || server.connected(name) == 1);
    let mut stuck = Conn::open(server.http_addr());
    stuck.send(&Req::get(&format!("/{name}/never-answered")).encode("h"));
    let line = held.read_line().expect("the request down the hand-dialled connection");
    assert!(line.starts_with("GET /never-answered "), "{line:?}");

    let proxy = Proxy::to(server.tunnel_addr());
    let port = format!("\"port\":{}", server.tunnel_addr().port());
    assert!(reg.contains(&port), "the reply names the tunnel port: {reg}");
    let registrar = Registrar::answering(reg.replace(&port, &format!("\"port\":{}", proxy.addr().port())));
    let share = env.share(ShareOptions::new(&registrar.addr.to_string(), origin.port()));
    assert!(matches!(share.wait_online(SOON), ShareStatus::Online(_)), "the client came online");
    // The waits the client announced for its `full` dials, oldest first.
    let fulls = || -> Vec<Duration> {
        let full = |r: &Report| match r {
            Report::Client(ClientEvent::Reconnecting { why: RetryReason::Full, after, .. }) => Some(*after),
            _ => None,
        };
        share.reports().iter().filter_map(full).collect()
    };
    wait_until(SOON, "the client to hold one place and be told `full` on its other dial", || {
        server.connected(name) == 2 && !fulls().is_empty()
    });

    let (dials, watched) = (proxy.accepted(), Instant::now());
    let (seen, far) = poll_for(Duration::from_secs(20), "the parked slot to announce a far retry", || {
        let redials = proxy.accepted() - dials;
        assert!(
            redials <= BUSY,
            "the client kept dialling a full tunnel: {redials} dials in {:?}",
            watched.elapsed()
        );
        let last = fulls().last().copied().filter(|&after| after >= FAR)?;
        Some((Instant::now(), last))
    });
    let redials = proxy.accepted() - dials;
    eprintln!(
        "parked: {redials} redials in {:?}, {} `full` verdicts, next retry in {far:?}",
        watched.elapsed(),
        fulls().len()
    );
    assert_eq!(server.connected(name), 2, "the pool stayed full");
    assert_eq!(registrar.calls.load(Ordering::SeqCst), 1, "`full` is no reason to register again");

    // The origin closes after a close-delimited response: the tunnel connection that carried it ends.
    let before = proxy.accepted();
    let r = server.fetch(&Req::get(&format!("/{name}/close")));
    assert_eq!(r.status, 200, "{}", r.text());
    // Only a connection dialled after that close can serve this (the hand-dialled one is busy).
    let r = server.fetch(&Req::get(&format!("/{name}/after-the-drop")));
    let took = seen.elapsed();
    assert_eq!((r.status, r.header("x-echo-target")), (200, Some("/after-the-drop")), "{}", r.text());
    assert!(proxy.accepted() > before, "the client dialled again after its connection dropped");
    // The parked timer fires `far` after its announcement, which came before `seen`.
    assert!(
        took < far - LATE,
        "served {took:?} after a {far:?} retry was announced: the redial waited for that timer, not the drop"
    );
    wait_until(SOON, "the pool back at its two places", || server.connected(name) == 2);
    assert_eq!(registrar.calls.load(Ordering::SeqCst), 1);
    drop((share, stuck, held));
}
