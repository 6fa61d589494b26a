//! Cases 9–11: the origin down, the client gone, the server restarted.

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aether_core::id::TunnelId;
use aether_core::options::ShareOptions;
use aether_core::options::ShareStatus;
use aether_tests::{
    Conn, Env, Origin, Proxy, Req, eventually, json_num, loopback, poll_for, slack, wait_until,
};

use crate::common::SOON;

/// Origin port closed, client up: 502 at once with a body naming the address, on a visitor
/// connection that stays usable; once an origin listens there, requests get through.
///
/// The origin's address is a [`Proxy`] port, bound but not listening (refused, as a closed
/// port is), that later forwards to a real origin: no port number is freed and bound again.
pub fn origin_down_502(env: &Env) {
    let front = Proxy::closed();
    let port = front.addr().port();
    let server = env.server();
    let mut opts = env.share_options(&server, port);
    // A client that waited out its connect timeout instead of taking the refusal would be slow.
    opts.origin_timeout = Duration::from_secs(30);
    let t = env.tunnel_with(&server, opts);
    let mut conn = t.connect();
    let started = Instant::now();
    let r = conn.exchange(&t.host, &Req::get(&t.target("/down")));
    let took = started.elapsed();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(took < slack(SOON), "502 took {took:?}");
    assert!(r.text().contains(&format!("127.0.0.1:{port}")), "the body names the origin: {}", r.text());

    let r = conn.exchange(&t.host, &Req::new("POST", &t.target("/down-post")).body("lost body"));
    assert_eq!(r.status, 502, "a request with a body, same visitor connection");
    let r = conn.exchange(&t.host, &Req::new("HEAD", &t.target("/down-head")));
    assert_eq!(r.status, 502);

    let origin = Origin::start();
    front.forward(SocketAddr::from(([127, 0, 0, 1], origin.port())));
    let r = conn.exchange(&t.host, &Req::get(&t.target("/up")));
    assert_eq!((r.status, r.header("x-echo-target")), (200, Some("/up")), "the origin is back");
    assert_eq!(origin.hits("/up"), 1);
    let logs = t.share.request_logs();
    assert!(logs.iter().any(|l| l.path == "/down" && l.status == 502), "502 reported: {logs:?}");
}

/// A client goes away: its tunnel answers 503 "offline" with Retry-After, other tunnels keep
/// serving, a new client without the token cannot take the name during the grace, and after
/// the grace a new client registers it again and the tunnel works.
pub fn client_killed(env: &Env) {
    const GRACE: Duration = Duration::from_secs(8);
    let mut opts = loopback();
    // Long enough for the steps inside it; the thief tries right after the first 503.
    opts.limits.offline_grace = slack(GRACE);
    let origin = Origin::start();
    let server = env.serve(opts);
    let gone = env.named_tunnel(&server, origin.port(), "goes-away");
    let stays = env.tunnel(&server, origin.port());
    assert_eq!(gone.get("/first").status, 200);
    let target = gone.target("/x");
    drop(gone);

    let r = poll_for(SOON, "503 for the tunnel whose client left", || {
        let r = server.fetch(&Req::get(&target));
        (r.status == 503).then_some(r)
    });
    let mut again = env.share_options(&server, origin.port());
    again.subdomain = Some(TunnelId::parse("goes-away").unwrap());
    let thief = env.share(again);
    match thief.wait_online(SOON) {
        ShareStatus::Fatal(why) => assert!(
            why.contains("the tunnel name `goes-away` is in use by another client"),
            "the thief gives up because the name is held (409), not for another reason: {why}"
        ),
        other => panic!("a client without the token must not get the name during the grace: {other:?}"),
    }
    drop(thief);
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    assert!(r.text().contains("offline"), "{}", r.text());
    for i in 0..20 {
        assert_eq!(stays.get(&format!("/other/{i}")).status, 200, "the other tunnel keeps serving");
    }

    wait_until(GRACE + SOON, "the name to expire", || server.tunnel_status("goes-away").is_none());
    let back = env.named_tunnel(&server, origin.port(), "goes-away");
    let r = back.get("/back");
    assert_eq!((r.status, r.header("x-echo-target")), (200, Some("/back")));
    assert_eq!(origin.hits("/x"), 0, "nothing reached the origin while offline");
    assert_eq!(stays.get("/other/end").status, 200);
}

/// The server restarts behind the same public address: the client registers again under the
/// same name and the same URL works.
///
/// Client and visitors reach the server's HTTP port through a [`Proxy`], which refuses while
/// no server runs and then forwards to the new one (on new ports: no port number is bound
/// twice). The new server's tunnel port is new too; the client learns it when it registers again.
pub fn server_restarted(env: &Env) {
    let origin = Origin::start();
    let first = env.server();
    let front = Proxy::to(first.http_addr());
    let opts = ShareOptions::new(&front.addr().to_string(), origin.port());
    let mut t = env.tunnel_with(&first, opts);
    assert_eq!(t.url, format!("http://{}/{}", front.addr(), t.id), "the public URL is the proxy's");
    (t.server, t.host) = (front.addr(), front.addr().to_string());
    assert_eq!(t.get("/before").status, 200);
    // Refuse first, so nothing is ever forwarded to the stopped server's freed port.
    front.refuse();
    first.stop();

    let second = env.server();
    front.forward(second.http_addr());
    let r = poll_for(Duration::from_secs(20), "the tunnel back under its name", || {
        let r = t.get("/after");
        (r.status == 200).then_some(r)
    });
    assert_eq!(r.header("x-echo-target"), Some("/after"));
    assert_eq!(origin.hits("/after"), 1);
    t.wait_connected(&second, None);
    assert!(matches!(t.share.wait_online(SOON), ShareStatus::Online(_)));
}

/// One visitor request on a fresh connection; `Err` describes a wrong or missing answer.
fn visit(addr: SocketAddr, target: &str) -> Result<(), String> {
    let mut conn = Conn::open(addr);
    conn.set_read_timeout(SOON);
    conn.send(&Req::get(target).encode(&addr.to_string()));
    match conn.try_response("GET") {
        Ok(r) if matches!(r.status, 200 | 502 | 503) => Ok(()),
        Ok(r) => Err(format!("{target}: {} {}", r.status, r.text())),
        Err(e) => Err(format!("{target}: no answer within {:?} ({e})", slack(SOON))),
    }
}

/// Clients die while visitors keep sending requests (and a burst arrives just as each one
/// dies): every request still gets an answer (200, or 502/503 for the tunnel that is gone)
/// within a few seconds; none is left hanging.
pub fn visitors_answered_when_client_dies(env: &Env) {
    let origin = Origin::start();
    let server = env.server();
    let addr = server.http_addr();
    let mut tunnel = env.tunnel(&server, origin.port());
    let current = Mutex::new(format!("/{}", tunnel.id));
    let stop = AtomicBool::new(false);
    let bad = Mutex::new(Vec::new());
    let (current, stop, bad) = (&current, &stop, &bad);
    std::thread::scope(|scope| {
        for v in 0..4 {
            scope.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) && i < 5000 {
                    let target = format!("{}/load/{v}/{i}", current.lock().unwrap());
                    i += 1;
                    if let Err(e) = visit(addr, &target) {
                        bad.lock().unwrap().push(e);
                    }
                }
            });
        }
        for round in 0..30 {
            let from = origin.requests();
            if !eventually(SOON, || origin.requests() >= from + 20) {
                stop.store(true, Ordering::SeqCst);
                panic!(
                    "round {round}: requests stopped flowing; went wrong so far: {:#?}",
                    bad.lock().unwrap()
                );
            }
            let target = format!("/{}/burst/{round}", tunnel.id);
            drop(tunnel);
            std::thread::scope(|burst| {
                for _ in 0..8 {
                    burst.spawn(|| {
                        if let Err(e) = visit(addr, &target) {
                            bad.lock().unwrap().push(e);
                        }
                    });
                }
            });
            tunnel = env.tunnel(&server, origin.port());
            *current.lock().unwrap() = format!("/{}", tunnel.id);
        }
        stop.store(true, Ordering::SeqCst);
    });
    let bad = bad.lock().unwrap();
    assert!(bad.is_empty(), "{} visitor requests went wrong: {:#?}", bad.len(), &bad[..bad.len().min(10)]);
}

/// Visitors that leave mid-upload or mid-download do not leave the tunnel in a bad state:
/// later requests are answered and the pool is whole and idle again.
pub fn visitors_abandon_midway(env: &Env) {
    let s = crate::common::setup(env);
    let t = &s.tunnel;
    for i in 0..8 {
        let mut up = t.connect();
        let mut bytes = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000\r\n\r\n",
            t.target(&format!("/cut/{i}")),
            t.host
        )
        .into_bytes();
        bytes.extend_from_slice(&[b'x'; 1000]);
        up.send(&bytes);
        drop(up);

        let mut down = t.connect();
        down.send(&Req::get(&t.target("/download/4194304")).encode(&t.host));
        let head = down.response_head().expect("the download starts");
        assert_eq!(head.status, 200);
        down.read_exact(64 * 1024).expect("some of the body");
        drop(down);
    }
    let mut conn = t.connect();
    for i in 0..30 {
        let r = conn.exchange(&t.host, &Req::get(&t.target(&format!("/ok/{i}"))));
        assert_eq!((r.status, r.header("x-echo-target")), (200, Some(format!("/ok/{i}").as_str())));
    }
    wait_until(SOON, "all ten tunnel connections idle again", || {
        s.server.tunnel_status(&t.id).is_some_and(|st| {
            json_num(&st, "idle") == Some(10) && json_num(&st, "connected_sockets") == Some(10)
        })
    });
}

/// An origin that answers one request per connection and then closes it silently when the next
/// request arrives (as one that times out idle connections does, racing the client's reuse): a GET
/// is retried on a fresh connection and succeeds; a POST, whose body cannot be sent again, gets 502.
pub fn kept_origin_closed_silently(env: &Env) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = answered.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let count = count.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                // The next request's first bytes: close without a word.
                let _ = s.read(&mut chunk);
            });
        }
    });
    let server = env.server();
    let mut opts = env.share_options(&server, port);
    opts.max_conns = Some(1);
    let t = env.tunnel_with(&server, opts);
    let mut conn = t.connect();
    for i in 0..5 {
        let r = conn.exchange(&t.host, &Req::get(&t.target(&format!("/get-{i}"))));
        assert_eq!(
            (r.status, r.text()),
            (200, "ok".to_owned()),
            "GET {i} on a silently closed kept connection"
        );
    }
    assert_eq!(answered.load(Ordering::SeqCst), 5, "each GET reached the origin once");
    let r = conn.exchange(&t.host, &Req::new("POST", &t.target("/post")).body("once only"));
    assert_eq!(r.status, 502, "a request with a body is not sent twice: {}", r.text());
    assert_eq!(answered.load(Ordering::SeqCst), 5);
}
