use super::*;
use crate::handshake::{Hello, Verdict};
use crate::hub::{ConnId, Input, Output, ServerConfig, ServerEvent};
use crate::limits::Limits;

/// Everything the hub has to say right now.
fn drain(hub: &mut Hub) -> Vec<Output> {
    std::iter::from_fn(|| hub.poll()).collect()
}

/// A reply as a visitor reads it: the status, the header fields (names lowercased) and what follows the head.
#[derive(Debug)]
struct Seen {
    status: u16,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        let mut found = self.fields.iter().filter(|(n, _)| n == name);
        let first = found.next().map(|(_, v)| v.as_str());
        assert!(found.next().is_none(), "{name} appears twice: {self:?}");
        first
    }

    /// `Connection: close` is present (the visitor must not send another request).
    fn closes(&self) -> bool {
        self.field("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    fn length(&self) -> usize {
        self.field("content-length").and_then(|v| v.parse().ok()).expect("every reply has a Content-Length")
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// Splits a reply by hand, independently of the crate's decoder.
fn seen(bytes: &[u8]) -> Seen {
    let text = std::str::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default();
    let status = start.strip_prefix("HTTP/1.1 ").and_then(|s| s.get(..3)?.parse().ok()).expect(start);
    let fields = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect(l);
            (n.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    Seen { status, fields, body: body.as_bytes().to_vec() }
}

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
    // The tunnel goes online with one connection, then offline when it closes: its name is held.
    let conn = ConnId(1);
    let hello = Hello { id: parsed.id.clone(), token: Some(token) };
    hub.handle(Instant::now(), Input::Hello { conn, hello });
    let out = drain(&mut hub);
    let accepted = Output::Verdict { conn, verdict: Verdict::Accepted, write_line: true };
    assert!(out.contains(&accepted), "the hello is accepted: {out:?}");
    assert!(out.contains(&Output::Event(ServerEvent::Online { id: parsed.id.clone() })), "{out:?}");
    hub.handle(Instant::now(), Input::ConnClosed { conn });
    let out = drain(&mut hub);
    assert!(out.contains(&Output::Event(ServerEvent::Offline { id: parsed.id.clone() })), "{out:?}");
    let (held, _) = ask(&mut hub, &c, "GET /?new=myapp HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(seen(held.as_bytes()).status, 409, "an offline tunnel's name stays held: {held}");
    // Resuming with the token works while the name is held, and gives back the same tunnel.
    let resume = format!("GET /?new=myapp HTTP/1.1\r\nHost: t\r\n{TOKEN_HEADER}: {}\r\n\r\n", token.to_hex());
    let (again, _) = ask(&mut hub, &c, &resume);
    let again = seen(again.as_bytes());
    assert_eq!(again.status, 200, "{again:?}");
    let resumed: crate::hub::RegistrationReply = serde_json::from_slice(&again.body).unwrap();
    assert_eq!((resumed.id, resumed.token), (parsed.id.clone(), Some(token)));
    let out = drain(&mut hub);
    let event = ServerEvent::Registered { id: parsed.id.clone(), resumed: true };
    assert!(out.contains(&Output::Event(event)), "{out:?}");
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

/// Asks with the hub's answer to the checkout already known: the refusal a proxied request gets.
fn refused(raw: &str, why: Refusal) -> (Seen, bool) {
    let mut hub = Hub::new(ServerConfig::default(), Instant::now());
    let v = Visitor { addr: "10.0.0.9", local: "127.0.0.1:8080" };
    let (h, mut dec) = head(raw);
    let Admit::Proxy(_, fwd) = admit(&cfg(None), &mut hub, Instant::now(), &h, v, || [3; 32], &mut dec)
    else {
        panic!("not proxied: {raw}")
    };
    let (bytes, close) = fwd.refused(why, &mut dec);
    (seen(&bytes), close)
}

#[test]
fn each_refusal_has_the_spec_status_and_a_message() {
    // SPEC §5: unknown tunnel 404; offline 503 with Retry-After; queue full 503; queue deadline 504.
    let offline = Refusal::Offline { retry_after: std::time::Duration::from_millis(1500) };
    for (why, status, says) in [
        (Refusal::UnknownTunnel, 404, "no tunnel"),
        (offline, 503, "offline"),
        (Refusal::QueueFull, 503, "busy"),
        (Refusal::TimedOut, 504, "busy"),
    ] {
        let (r, close) = refused("GET /some-tunnel/x HTTP/1.1\r\nHost: t\r\n\r\n", why);
        assert_eq!((r.status, close, r.closes()), (status, false, false), "{r:?}");
        assert!(r.text().contains(says) && r.text().ends_with('\n'), "{r:?}");
        assert_eq!(r.length(), r.body.len(), "{r:?}");
        assert_eq!(r.field("retry-after").is_some(), status == 503 && r.text().contains("offline"), "{r:?}");
    }
}

#[test]
fn retry_after_is_whole_seconds_no_sooner_than_the_tunnel_could_return() {
    for ms in [0, 1, 999, 1000, 1001, 1500, 2000, 59_999] {
        let why = Refusal::Offline { retry_after: std::time::Duration::from_millis(ms) };
        let r = seen(&refusal(why, false, false));
        let secs: u64 = r.field("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
        // Never 0 (an instant retry finds it still offline), never before the wait is over, and whole
        // seconds: under a second later than the wait, or 1.
        assert!(
            secs >= 1 && secs * 1000 >= ms && (secs == 1 || secs * 1000 < ms + 1000),
            "{ms} ms -> {secs} s"
        );
    }
}

#[test]
fn a_refused_head_request_gets_the_head_only_and_a_closing_refusal_says_so() {
    let (get, _) = refused("GET /some-tunnel/x HTTP/1.1\r\nHost: t\r\n\r\n", Refusal::QueueFull);
    let (r, close) = refused("HEAD /some-tunnel/x HTTP/1.1\r\nHost: t\r\n\r\n", Refusal::QueueFull);
    assert!(!close && r.body.is_empty(), "HEAD gets no body: {r:?}");
    assert_eq!((r.status, r.length()), (503, get.body.len()), "the length a GET would get");
    let (r, close) =
        refused("POST /some-tunnel/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n", Refusal::TimedOut);
    assert!(close && r.closes(), "an unread body: close, and say so: {r:?}");
    let (r, close) = refused("GET /some-tunnel/x HTTP/1.0\r\n\r\n", Refusal::UnknownTunnel);
    assert!(close && r.closes(), "an HTTP/1.0 visitor does not keep the connection: {r:?}");
}

#[test]
fn a_server_reply_says_connection_close_exactly_when_it_closes() {
    let mut hub = Hub::new(ServerConfig::default(), Instant::now());
    let c = cfg(None);
    for (raw, want) in [
        ("GET /api/status HTTP/1.1\r\nHost: t\r\n\r\n", false),
        ("GET /api/status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", true),
        ("GET /api/status HTTP/1.0\r\n\r\n", true),
        ("GET /api/status HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n", true),
        ("GET /api/status HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", true),
    ] {
        let (r, close) = ask(&mut hub, &c, raw);
        let r = seen(r.as_bytes());
        assert_eq!((r.status, close, r.closes()), (200, want, want), "{raw:?}: {r:?}");
    }
}

#[test]
fn own_errors_name_the_problem_and_close() {
    // SPEC §8: a head that does not arrive in time gets 408 and the connection closes.
    let r = seen(&head_timeout());
    assert!(r.status == 408 && r.closes() && r.text().contains("in time"), "{r:?}");
    // SPEC §5: an ambiguous request gets a clear 4xx and its connection is closed.
    let r = seen(&frame_error(FrameError::LengthWithTransferEncoding));
    assert!(r.status == 400 && r.closes(), "{r:?}");
    assert!(r.text().contains("Content-Length") && r.text().contains("Transfer-Encoding"), "{r:?}");
    let r = seen(&tunnel_broke());
    assert!(r.status == 502 && r.closes() && r.text().contains("tunnel connection failed"), "{r:?}");
    assert_eq!(r.length(), r.body.len());
}

#[test]
fn a_broken_exchange_answers_only_while_nothing_was_sent() {
    let tunnel = broken(None, false).expect("no response byte went out: a reply");
    assert_eq!(tunnel, tunnel_broke(), "the tunnel's fault: 502");
    let visitor = broken(Some(FrameError::InvalidChunkSize), false).expect("a reply");
    let r = seen(&visitor);
    assert!(r.status == 400 && r.closes() && r.text().contains("chunk"), "the visitor's own error: {r:?}");
    assert_eq!(broken(None, true), None, "part of a response went out: only the close tells");
    assert_eq!(broken(Some(FrameError::InvalidChunkSize), true), None);
}

#[test]
fn origin_unreachable_names_the_address_keeps_the_connection_and_honours_head() {
    let (get, _) = head("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = seen(&origin_unreachable("127.0.0.1:3000", "connection refused", &get));
    assert!(r.status == 502 && !r.closes(), "SPEC §6: the tunnel connection stays usable: {r:?}");
    assert!(r.text().contains("127.0.0.1:3000") && r.text().contains("connection refused"), "{r:?}");
    assert_eq!(r.length(), r.body.len());
    let (head_req, _) = head("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    let h = seen(&origin_unreachable("127.0.0.1:3000", "connection refused", &head_req));
    assert!(h.status == 502 && h.body.is_empty() && h.length() == r.body.len(), "HEAD: head only: {h:?}");
}
