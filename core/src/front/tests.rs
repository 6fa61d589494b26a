use super::*;
use crate::hub::{Input, Output, ServerConfig};
use crate::limits::Limits;

fn head(raw: &str) -> (Head, Decoder) {
    let mut dec = Decoder::request(&Limits::default());
    match dec.decode(&mut BytesMut::from(raw.as_bytes())) {
        Ok(Some(Frame::Head(h))) => (h, dec),
        other => panic!("{other:?}"),
    }
}

fn cfg(domain: Option<&str>) -> FrontConfig {
    FrontConfig {
        route: RouteConfig { domain: domain.map(str::to_owned) },
        proto: Proto::Http,
        landing: "https://example.org/".into(),
        mem: MemStats::default,
    }
}

fn ask(hub: &mut Hub, c: &FrontConfig, raw: &str) -> (String, bool) {
    let v = Visitor { addr: "10.0.0.9", local: "127.0.0.1:8080" };
    let (h, mut dec) = head(raw);
    match admit(c, hub, Instant::now(), &h, v, || [3; 32], &mut dec) {
        Admit::Reply { bytes, close } => (String::from_utf8(bytes.to_vec()).unwrap(), close),
        Admit::Proxy(_, fwd) => (format!("PROXY {}", String::from_utf8(fwd.head.to_vec()).unwrap()), false),
    }
}

#[test]
fn registration_status_and_proxy_in_path_mode() {
    let mut hub = Hub::new(ServerConfig::default(), Instant::now());
    let c = cfg(None);
    let (reg, close) = ask(&mut hub, &c, "GET /?new=myapp HTTP/1.1\r\nHost: t.local:8080\r\n\r\n");
    assert!(reg.starts_with("HTTP/1.1 200 OK\r\n") && !close, "{reg}");
    let body = reg.split("\r\n\r\n").nth(1).unwrap();
    let parsed: crate::hub::RegistrationReply = serde_json::from_str(body).unwrap();
    assert_eq!(parsed.url, "http://t.local:8080/myapp");
    let token = parsed.token.unwrap();
    let (taken, _) = ask(&mut hub, &c, "GET /?new=myapp HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(taken.starts_with("HTTP/1.1 409 "), "{taken}");
    let (bad, _) = ask(&mut hub, &c, "GET /?new=A HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 403 ") && bad.contains("4 to 63"), "{bad}");
    let (st, _) = ask(&mut hub, &c, "GET /api/tunnels/myapp/status HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(st.contains("\"connected_sockets\":0"), "{st}");
    let (st, _) = ask(&mut hub, &c, "GET /api/tunnels/nobody/status HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(st.starts_with("HTTP/1.1 404 "), "{st}");
    let (st, _) = ask(&mut hub, &c, "HEAD /api/status HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(st.starts_with("HTTP/1.1 200 ") && st.ends_with("\r\n\r\n"), "HEAD has no body: {st}");
    let (land, _) = ask(&mut hub, &c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(land.starts_with("HTTP/1.1 302 ") && land.contains("Location: https://example.org/\r\n"));
    let (p, _) = ask(&mut hub, &c, "GET /myapp/a%2Fb?q HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        p.starts_with("PROXY GET /a%2Fb?q HTTP/1.1\r\n") && p.contains("X-Forwarded-For: 10.0.0.9\r\n"),
        "{p}"
    );
    // Resuming with the token works while the name is held.
    let resume = format!("GET /?new=myapp HTTP/1.1\r\nHost: t\r\n{TOKEN_HEADER}: {}\r\n\r\n", token.to_hex());
    hub.handle(
        Instant::now(),
        Input::Hello {
            conn: crate::hub::ConnId(1),
            hello: crate::handshake::Hello { id: parsed.id.clone(), token: Some(token) },
        },
    );
    while hub.poll().is_some_and(|o| !matches!(o, Output::Granted { .. })) {}
    hub.handle(Instant::now(), Input::ConnClosed { conn: crate::hub::ConnId(1) });
    let (again, _) = ask(&mut hub, &c, &resume);
    assert!(again.starts_with("HTTP/1.1 200 "), "{again}");
    let (junk, close) =
        ask(&mut hub, &c, &format!("GET /?new=myapp HTTP/1.1\r\nHost: t\r\n{TOKEN_HEADER}: zz\r\n\r\n"));
    assert!(junk.starts_with("HTTP/1.1 400 ") && !close, "{junk}");
}

#[test]
fn a_body_on_a_server_endpoint_closes_and_domain_mode_proxies_every_path() {
    let mut hub = Hub::new(
        ServerConfig { domain: Some("t.example".into()), ..ServerConfig::default() },
        Instant::now(),
    );
    let c = cfg(Some("t.example"));
    let (r, close) =
        ask(&mut hub, &c, "POST /api/status HTTP/1.1\r\nHost: t.example\r\nContent-Length: 2\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 405 ") && close, "{r}");
    let (r, _) = ask(&mut hub, &c, "GET /api/status HTTP/1.1\r\nHost: abcd.t.example\r\n\r\n");
    assert!(r.starts_with("PROXY GET /api/status "), "{r}");
    let (r, _) = ask(&mut hub, &c, "GET /abcd HTTP/1.1\r\nHost: t.example\r\n\r\n");
    let body = r.split("\r\n\r\n").nth(1).unwrap();
    assert!(body.contains("\"url\":\"http://abcd.t.example\""), "{r}");
}

#[test]
fn a_refused_request_keeps_the_visitor_unless_a_body_went_unread() {
    let mut hub = Hub::new(ServerConfig::default(), Instant::now());
    let c = cfg(None);
    let v = Visitor { addr: "10.0.0.9", local: "127.0.0.1:8080" };
    for (raw, want_close) in [
        ("GET /some-tunnel/x HTTP/1.1\r\nHost: t\r\n\r\n", false),
        ("POST /some-tunnel/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n", true),
        ("GET /some-tunnel/x HTTP/1.0\r\n\r\n", true),
    ] {
        let (h, mut dec) = head(raw);
        let Admit::Proxy(_, fwd) = admit(&c, &mut hub, Instant::now(), &h, v, || [3; 32], &mut dec) else {
            panic!("not proxied: {raw}")
        };
        let (bytes, close) = fwd.refused(Refusal::UnknownTunnel, &mut dec);
        assert!(bytes.starts_with(b"HTTP/1.1 404 ") && close == want_close, "{raw}");
        if !close {
            let mut next = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"[..]);
            assert!(matches!(dec.decode(&mut next), Ok(Some(Frame::Head(_)))), "ready for the next request");
        }
    }
}

#[test]
fn refusals_and_errors_say_what_happened() {
    let off = String::from_utf8(
        refusal(Refusal::Offline { retry_after: std::time::Duration::from_millis(1500) }, false, false)
            .to_vec(),
    )
    .unwrap();
    assert!(
        off.starts_with("HTTP/1.1 503 ") && off.contains("Retry-After: 2\r\n") && off.contains("offline")
    );
    let full = String::from_utf8(refusal(Refusal::QueueFull, true, false).to_vec()).unwrap();
    assert!(full.starts_with("HTTP/1.1 503 ") && full.contains("Connection: close"));
    assert!(refusal(Refusal::TimedOut, false, false).starts_with(b"HTTP/1.1 504 "));
    assert!(frame_error(FrameError::LengthWithTransferEncoding).starts_with(b"HTTP/1.1 400 "));
    assert!(head_timeout().starts_with(b"HTTP/1.1 408 "));
    let (get, _) = head("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let down =
        String::from_utf8(origin_unreachable("127.0.0.1:3000", "connection refused", &get).to_vec()).unwrap();
    assert!(down.starts_with("HTTP/1.1 502 ") && down.contains("127.0.0.1:3000") && !down.contains("close"));
}
