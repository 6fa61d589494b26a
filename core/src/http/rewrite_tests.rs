//! What the rewriter forwards: the request the origin reads and the response the visitor reads,
//! checked by parsing the output back (field by field), not by comparing whole strings.

use bytes::BytesMut;

use super::*;
use crate::http::tests::{GET, head_of};
use crate::http::{Method, Role};

/// The start line and the fields (name lowercased, value as sent) of a head, in order.
fn parsed(raw: &str) -> (String, Vec<(String, String)>) {
    let mut lines = raw.strip_suffix("\r\n\r\n").expect("head ends in a blank line").split("\r\n");
    let start = lines.next().unwrap_or_default().to_string();
    let fields = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a field line has a colon");
            (n.to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (start, fields)
}

fn values<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    fields.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
}

/// The `Connection` options of a head, lowercased (option names are case-insensitive).
fn connection_options(fields: &[(String, String)]) -> Vec<String> {
    values(fields, "connection")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|o| o.trim().to_ascii_lowercase())
        .filter(|o| !o.is_empty())
        .collect()
}

fn forwarded(input: &str, target: TargetRewrite) -> (String, RequestInfo) {
    let head = head_of(Role::Request, input);
    let mut out = BytesMut::new();
    let fwd = Forwarding { client: "203.0.113.9", proto: Proto::Https, target };
    let info = rewrite_request(&head, &fwd, &mut out);
    (String::from_utf8(out.to_vec()).unwrap(), info)
}

fn rewritten(input: &str, keep: bool) -> String {
    let head = head_of(Role::Response, input);
    let mut out = BytesMut::new();
    rewrite_response(&head, keep, &mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

#[test]
fn path_prefix_is_stripped_byte_for_byte() {
    let strip = |t: &str, skip, lead_slash| {
        let (out, _) =
            forwarded(&format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n"), TargetRewrite { skip, lead_slash });
        out.lines().next().unwrap().to_string()
    };
    assert_eq!(strip("/myapp/a%2Fb//c/../d?q=%20", 6, false), "GET /a%2Fb//c/../d?q=%20 HTTP/1.1");
    assert_eq!(strip("/myapp", 6, true), "GET / HTTP/1.1");
    assert_eq!(strip("/myapp?x=1", 6, true), "GET /?x=1 HTTP/1.1");
    assert_eq!(strip("*", 0, false), "GET * HTTP/1.1");
}

#[test]
fn empty_lines_before_the_start_line_are_not_forwarded() {
    // RFC 9112 §2.2: a recipient ignores them; the origin gets the request line first.
    let (out, _) = forwarded("\r\n\r\nPUT /x HTTP/1.1\r\nHost: h\r\n\r\n", TargetRewrite::default());
    assert_eq!(parsed(&out).0, "PUT /x HTTP/1.1");
    let out = rewritten("\r\nHTTP/1.1 204 No Content\r\n\r\n", true);
    assert_eq!(parsed(&out).0, "HTTP/1.1 204 No Content");
}

#[test]
fn forwarded_headers_and_hop_by_hop() {
    let input = "POST /x HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\nX-Forwarded-Proto: http\r\nConnection: close, X-Secret, Content-Length\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nContent-Length: 2\r\nX-Keep: k\r\n\r\n";
    let (out, info) = forwarded(input, TargetRewrite::default());
    let (_, fields) = parsed(&out);
    assert_eq!(values(&fields, "x-forwarded-for"), ["10.0.0.1, 10.0.0.2, 203.0.113.9"], "{out}");
    assert_eq!(values(&fields, "x-forwarded-proto"), ["https"]);
    assert_eq!(values(&fields, "x-forwarded-host"), ["app.example.com"]);
    assert_eq!(values(&fields, "content-length"), ["2"], "Connection may not remove framing");
    assert_eq!(values(&fields, "x-keep"), ["k"]);
    assert_eq!(values(&fields, "host"), ["app.example.com"]);
    for gone in ["x-secret", "keep-alive", "te", "upgrade", "connection"] {
        assert!(values(&fields, gone).is_empty(), "{gone} survived: {out}");
    }
    assert!(info.keep_alive, "the forwarded request no longer says close");
    // The rewritten head is itself a valid request with the same body framing.
    let again = head_of(Role::Request, &out);
    assert_eq!(again.body(), BodyKind::Length(2));
}

/// A head whose `Connection` names `count` fields (in reverse order), each of which is present.
fn naming(start: &str, count: usize) -> String {
    let names: Vec<String> = (0..count).rev().map(|i| format!("X-Hop-{i:02}")).collect();
    let mut head = format!("{start}\r\nHost: h\r\nConnection: {}\r\n", names.join(", "));
    for name in &names {
        head.push_str(&format!("{name}: secret\r\nX-End-{name}: kept\r\n"));
    }
    head + "Content-Length: 0\r\n\r\n"
}

#[test]
fn every_field_named_by_connection_is_removed_however_many() {
    // RFC 9110 §7.6.1: a proxy removes each field that Connection names, not only the first few.
    for count in [1, 15, 16, 17, 40] {
        let (out, _) = forwarded(&naming("GET / HTTP/1.1", count), TargetRewrite::default());
        let (_, fields) = parsed(&out);
        let hops = fields.iter().filter(|(n, _)| n.starts_with("x-hop-")).count();
        let kept = fields.iter().filter(|(n, _)| n.starts_with("x-end-")).count();
        assert_eq!((hops, kept), (0, count), "{count} options: {out}");
        let response = rewritten(&naming("HTTP/1.1 200 OK", count), true);
        let (_, fields) = parsed(&response);
        let hops = fields.iter().filter(|(n, _)| n.starts_with("x-hop-")).count();
        let kept = fields.iter().filter(|(n, _)| n.starts_with("x-end-")).count();
        assert_eq!((hops, kept), (0, count), "{count} options in a response: {response}");
    }
}

#[test]
fn upgrade_requests_keep_their_upgrade() {
    let (out, info) = forwarded(
        "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
        TargetRewrite::default(),
    );
    assert!(info.upgrade);
    let (_, fields) = parsed(&out);
    assert_eq!(connection_options(&fields), ["upgrade"]);
    assert_eq!(values(&fields, "upgrade"), ["websocket"]);
    assert_eq!(values(&fields, "sec-websocket-key"), ["k"]);
}

#[test]
fn response_rewrite_says_what_the_server_does() {
    let out = rewritten(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    let (start, fields) = parsed(&out);
    assert_eq!(start, "HTTP/1.1 200 OK");
    assert_eq!(connection_options(&fields), ["close"], "{out}");
    assert!(values(&fields, "x-hop").is_empty(), "{out}");
    assert_eq!(values(&fields, "content-length"), ["0"]);

    // An HTTP/1.0 visitor's connection stays open only if the response says keep-alive.
    let out = rewritten("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", true);
    let (start, fields) = parsed(&out);
    assert_eq!(start, "HTTP/1.0 200 OK");
    assert_eq!(connection_options(&fields), ["keep-alive"]);
    assert_eq!(values(&fields, "content-length"), ["0"]);
    // HTTP/1.1 persists by default: nothing to say.
    let (_, fields) = parsed(&rewritten("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true));
    assert!(connection_options(&fields).is_empty());

    // A 101 keeps Upgrade (the protocol switched to) and says upgrade, whatever keep_alive says.
    let out = rewritten(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        false,
    );
    let (start, fields) = parsed(&out);
    assert_eq!(start, "HTTP/1.1 101 Switching Protocols");
    assert_eq!(values(&fields, "upgrade"), ["websocket"]);
    assert_eq!(connection_options(&fields), ["upgrade"], "{out}");
    // Upgrade on a response that switches nothing is hop-by-hop and goes.
    let (_, fields) =
        parsed(&rewritten("HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n", true));
    assert!(values(&fields, "upgrade").is_empty());
}

#[test]
fn visitor_keep_alive_decision() {
    let close_delimited = head_of(Role::Response, "HTTP/1.1 200 OK\r\n\r\n");
    let sized = head_of(Role::Response, "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
    assert!(!visitor_keep_alive(&GET, &close_delimited));
    assert!(visitor_keep_alive(&RequestInfo { method: Method::Head, ..GET }, &close_delimited));
    assert!(visitor_keep_alive(&GET, &sized), "an HTTP/1.0 origin does not close the visitor's connection");
    assert!(!visitor_keep_alive(&RequestInfo { keep_alive: false, ..GET }, &sized));
}

#[test]
fn expect_is_forwarded_only_from_http11() {
    let keep = TargetRewrite { skip: 0, lead_slash: false };
    let req =
        |v: &str| format!("POST /u {v}\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    let (out11, _) = forwarded(&req("HTTP/1.1"), keep);
    assert_eq!(values(&parsed(&out11).1, "expect"), ["100-continue"]);
    assert!(head_of(Role::Request, &req("HTTP/1.1")).expects_continue());
    // RFC 9110 §10.1.1: a server ignores 100-continue from HTTP/1.0, and §15.2: no 1xx goes back to it.
    let (out10, _) = forwarded(&req("HTTP/1.0"), keep);
    assert_eq!(values(&parsed(&out10).1, "expect"), Vec::<&str>::new());
    assert!(!head_of(Role::Request, &req("HTTP/1.0")).expects_continue());
}
