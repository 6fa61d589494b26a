//! Cases 2–5: requests and responses through the tunnel, framing kept, keep-alive,
//! pipelining and concurrency.

use std::time::Duration;

use aether_tests::client::Framing;
use aether_tests::origin::{CHUNKED_DATA, CHUNKED_RAW, CLOSE_BODY};
use aether_tests::{Env, Req, checksum, json_num, pattern, poll_for, wait_until};

use crate::common::{SOON, setup};

fn sum_hex(b: &[u8]) -> String {
    format!("{:016x}", checksum(b))
}

/// GET, POST, PUT, PATCH, DELETE with Content-Length and chunked bodies: the origin gets the
/// method, the framing and the body, the visitor gets the origin's answer, and the client
/// reports one request line for each.
pub fn methods_and_bodies(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let mut conn = t.connect();
    let cases: Vec<(&str, Req, &str, Vec<u8>)> = vec![
        ("GET", Req::get(&t.target("/m/get")), "none", vec![]),
        ("POST", Req::new("POST", &t.target("/m/post")).body("post body"), "length", b"post body".to_vec()),
        (
            "PUT",
            Req::new("PUT", &t.target("/m/put")).chunked(vec![b"put ".to_vec(), b"in chunks".to_vec()]),
            "chunked",
            b"put in chunks".to_vec(),
        ),
        (
            "PATCH",
            Req::new("PATCH", &t.target("/m/patch")).body(pattern(3000, 1)),
            "length",
            pattern(3000, 1),
        ),
        ("DELETE", Req::new("DELETE", &t.target("/m/delete")), "none", vec![]),
        ("POST", Req::new("POST", &t.target("/m/empty")).body(""), "length", vec![]),
    ];
    for (method, req, framing, body) in &cases {
        let r = conn.exchange(&t.host, req);
        let target = &req.target[t.id.len() + 1..];
        assert_eq!(r.status, 200, "{method} {target}: {}", r.text());
        assert_eq!(r.header("x-echo-method"), Some(*method));
        assert_eq!(r.header("x-echo-target"), Some(target));
        assert_eq!(r.header("x-echo-framing"), Some(*framing), "{method} {target}: framing kept");
        assert_eq!(r.body, *body, "{method} {target}: body");
        assert_eq!(r.header("x-echo-sum"), Some(sum_hex(body).as_str()));
        assert_eq!(s.origin.hits(target), 1, "{target}");
    }
    let logs = poll_for(SOON, "the client's request lines", || {
        let logs = s.tunnel.share.request_logs();
        (logs.len() >= cases.len()).then_some(logs)
    });
    assert!(
        logs.iter().any(|l| l.method == "PUT" && l.path == "/m/put" && l.status == 200),
        "a request line for the PUT: {logs:?}"
    );
}

/// A chunked request body reaches the origin as sent (extensions and trailers included), and
/// a chunked response reaches the visitor as the origin sent it.
pub fn chunked_forwarded_as_received(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let raw = b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Sent-Trailer: yes\r\n\r\n";
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nX-Want-Raw: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        t.target("/raw"),
        t.host
    )
    .into_bytes();
    req.extend_from_slice(raw);
    let mut conn = t.connect();
    conn.send(&req);
    let r = conn.response("POST");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-echo-framing"), Some("chunked"));
    assert_eq!(r.header("x-echo-trailers"), Some("X-Sent-Trailer: yes"));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        String::from_utf8_lossy(raw),
        "the origin got the raw chunks"
    );

    let r = conn.exchange(&t.host, &Req::get(&t.target("/chunked")));
    assert_eq!((r.status, r.framing), (200, Framing::Chunked));
    assert_eq!(r.body, CHUNKED_DATA);
    assert_eq!(String::from_utf8_lossy(&r.raw_body), String::from_utf8_lossy(CHUNKED_RAW));
    assert_eq!(r.trailers, vec![("X-Trailer".to_owned(), "done".to_owned())]);
    // The connection is still in step.
    assert_eq!(
        conn.exchange(&t.host, &Req::get(&t.target("/after"))).header("x-echo-target"),
        Some("/after")
    );
}

/// The origin sees the target after `/<id>` byte for byte: no decoding, merging or dot removal.
pub fn target_byte_for_byte(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let id = &t.id;
    let mut conn = t.connect();
    for (sent, seen) in [
        (format!("/{id}/a%2Fb//c?q=1"), "/a%2Fb//c?q=1".to_owned()),
        (format!("/{id}"), "/".to_owned()),
        (format!("/{id}?x=1&y"), "/?x=1&y".to_owned()),
        (format!("/{id}/"), "/".to_owned()),
        (format!("/{id}/./x/../y"), "/./x/../y".to_owned()),
        (format!("/{id}/%7Euser/%41?a=%20&b=/c//"), "/%7Euser/%41?a=%20&b=/c//".to_owned()),
        (format!("/{id}//{id}/twice"), format!("//{id}/twice")),
    ] {
        let before = s.origin.hits(&seen);
        let r = conn.exchange(&t.host, &Req::get(&sent));
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(r.header("x-echo-target"), Some(seen.as_str()), "{sent}");
        assert_eq!(s.origin.hits(&seen), before + 1, "{seen}");
    }
}

/// X-Forwarded-For is appended to (nginx style), -Proto and -Host are set (not trusted from
/// the visitor), and hop-by-hop fields (including those `Connection` names) do not pass.
pub fn forwarded_headers(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let r = t.fetch(&Req::get(&t.target("/fwd1")).header("Host", "visitor.example:8443"));
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.echoed("x-forwarded-proto"), Some("http"));
    assert_eq!(r.echoed("x-forwarded-host"), Some("visitor.example:8443"));
    assert_eq!(r.echoed("host"), Some("visitor.example:8443"));

    let r = t.fetch(
        &Req::get(&t.target("/fwd2"))
            .header("X-Forwarded-For", "10.1.2.3")
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "spoofed.example")
            .header("Connection", "keep-alive, X-Drop-Me")
            .header("X-Drop-Me", "1")
            .header("Keep-Alive", "timeout=5")
            .header("X-Keep-Me", "2"),
    );
    assert_eq!(r.status, 200);
    let xff: Vec<&str> = r.header_all("x-echo-h-x-forwarded-for");
    assert_eq!(xff.join(", "), "10.1.2.3, 127.0.0.1", "appended to");
    assert_eq!(r.header_all("x-echo-h-x-forwarded-proto"), vec!["http"], "set, not trusted");
    assert_eq!(r.header_all("x-echo-h-x-forwarded-host"), vec![t.host.as_str()]);
    assert_eq!(r.echoed("x-drop-me"), None, "named by Connection: hop-by-hop");
    assert_eq!(r.echoed("keep-alive"), None);
    assert_eq!(r.echoed("x-keep-me"), Some("2"));
}

/// HEAD (Content-Length but no body), 204, 304, a chunked response, and a close-delimited
/// response: each framed right, the connection kept where it can be and closed where it must.
pub fn head_204_304_chunked_close(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let mut conn = t.connect();
    let r = conn.exchange(&t.host, &Req::new("HEAD", &t.target("/download/1000")));
    assert_eq!((r.status, r.header("content-length"), r.framing), (200, Some("1000"), Framing::NoBody));
    let r = conn.exchange(&t.host, &Req::get(&t.target("/status/204")));
    assert_eq!((r.status, r.header("x-origin")), (204, Some("204")));
    let r = conn.exchange(&t.host, &Req::get(&t.target("/status/304")));
    assert_eq!((r.status, r.header("etag")), (304, Some("\"v1\"")));
    let r = conn.exchange(&t.host, &Req::get(&t.target("/status/404")));
    assert_eq!((r.status, r.text().as_str()), (404, "status 404\n"));
    let r = conn.exchange(&t.host, &Req::get(&t.target("/download/1000")));
    assert_eq!(r.body, pattern(1000, 1000), "after HEAD/204/304 the connection is in step");
    let r = conn.exchange(&t.host, &Req::new("HEAD", &t.target("/chunked")));
    assert_eq!((r.status, r.framing), (200, Framing::NoBody));
    let r = conn.exchange(&t.host, &Req::get(&t.target("/chunked")));
    assert_eq!(r.body, CHUNKED_DATA);

    let r = conn.exchange(&t.host, &Req::get(&t.target("/close")));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, CLOSE_BODY, "close-delimited body arrives whole");
    assert!(r.framing == Framing::Close || r.closes(), "{:?} {:?}", r.framing, r.headers);
    assert!(conn.closed_within(SOON), "the visitor connection ends with a close-delimited body");

    // The tunnel is fine afterwards (the tunnel connection that carried it was replaced).
    for i in 0..12 {
        assert_eq!(t.get(&format!("/after-close/{i}")).status, 200);
    }
}

/// An HTTP/1.0 visitor with no Host gets its answer, and the connection closes after it.
pub fn http10_visitor(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let mut conn = t.connect();
    conn.send(&Req::get(&t.target("/old")).http10().encode(""));
    let r = conn.response("GET");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-echo-target"), Some("/old"));
    assert!(conn.closed_within(SOON), "HTTP/1.0 without keep-alive closes");

    let mut conn = t.connect();
    conn.send(&Req::new("POST", &t.target("/old-post")).http10().body("ten bytes!").encode(""));
    let r = conn.response("POST");
    assert_eq!((r.status, r.text().as_str()), (200, "ten bytes!"));
}

/// 100 requests one after another on one visitor connection, alternating methods and bodies;
/// the origin sees each exactly once.
pub fn keep_alive_100_sequential(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let mut conn = t.connect();
    for i in 0..100 {
        let target = format!("/seq/{i}");
        let req = if i % 2 == 0 {
            Req::get(&t.target(&target))
        } else {
            Req::new("POST", &t.target(&target)).body(format!("body {i}"))
        };
        let r = conn.exchange(&t.host, &req);
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("x-echo-target"), Some(target.as_str()));
        assert!(!r.closes(), "request {i}: keep-alive");
        if i % 2 == 1 {
            assert_eq!(r.text(), format!("body {i}"));
        }
    }
    let hits = s.origin.all_hits();
    assert_eq!(hits.len(), 100);
    assert!(hits.values().all(|&n| n == 1), "each exactly once: {hits:?}");
}

/// Three requests written at once get three responses in order, bodies intact; HEAD in the
/// middle of a pipeline does not eat the next response.
pub fn pipelined(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let mut conn = t.connect();
    let mut bytes = Req::get(&t.target("/p/1")).encode(&t.host);
    bytes.extend(Req::new("POST", &t.target("/p/2")).body("second").encode(&t.host));
    bytes.extend(
        Req::new("PUT", &t.target("/p/3")).chunked(vec![b"thi".to_vec(), b"rd".to_vec()]).encode(&t.host),
    );
    conn.send(&bytes);
    for (i, method, body) in [(1, "GET", ""), (2, "POST", "second"), (3, "PUT", "third")] {
        let r = conn.response(method);
        assert_eq!(r.status, 200, "response {i}");
        assert_eq!(r.header("x-echo-target"), Some(format!("/p/{i}").as_str()), "in order");
        assert_eq!(r.text(), body);
    }
    let mut bytes = Req::new("HEAD", &t.target("/download/500")).encode(&t.host);
    bytes.extend(Req::get(&t.target("/download/300")).encode(&t.host));
    bytes.extend(Req::get(&t.target("/status/204")).encode(&t.host));
    bytes.extend(Req::get(&t.target("/p/4")).encode(&t.host));
    conn.send(&bytes);
    let r = conn.response("HEAD");
    assert_eq!((r.status, r.header("content-length")), (200, Some("500")));
    assert_eq!(conn.response("GET").body, pattern(300, 300));
    assert_eq!(conn.response("GET").status, 204);
    assert_eq!(conn.response("GET").header("x-echo-target"), Some("/p/4"));
    for i in 1..=4 {
        assert_eq!(s.origin.hits(&format!("/p/{i}")), 1);
    }
}

/// 20 visitors × 10 keep-alive requests at once, each with its own body: every response
/// matches its request, and the origin sees each request exactly once.
pub fn concurrent_200(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    std::thread::scope(|scope| {
        for v in 0..20 {
            scope.spawn(move || {
                let mut conn = t.connect();
                for i in 0..10 {
                    let body = pattern(100 + v * 37 + i, (v * 1000 + i) as u64);
                    let target = format!("/c/{v}/{i}");
                    let r = conn.exchange(&t.host, &Req::new("POST", &t.target(&target)).body(body.clone()));
                    assert_eq!(r.status, 200, "{target}");
                    assert_eq!(r.header("x-echo-target"), Some(target.as_str()));
                    assert!(r.body == body, "{target}: the response carries this request's body");
                }
            });
        }
    });
    let hits = s.origin.all_hits();
    assert_eq!(hits.len(), 200, "200 distinct requests");
    assert!(hits.values().all(|&n| n == 1), "each exactly once");
    wait_until(SOON, "every tunnel connection back in the pool", || {
        s.server.tunnel_status(&t.id).and_then(|st| json_num(&st, "busy")) == Some(0)
    });
}

/// `Expect: 100-continue`: the origin's interim 100 reaches the visitor before it sends the body.
pub fn expect_continue(env: &Env) {
    let s = setup(env);
    let t = &s.tunnel;
    let mut conn = t.connect();
    conn.send(
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            t.target("/continue"),
            t.host
        )
        .as_bytes(),
    );
    conn.set_read_timeout(Duration::from_secs(5));
    let line = conn.read_line().expect("an interim response before the body is sent");
    assert!(line.starts_with("HTTP/1.1 100"), "{line:?}");
    assert_eq!(conn.read_line().unwrap(), "\r", "end of the interim head");
    conn.send(b"hello");
    let r = conn.response("POST");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
}
