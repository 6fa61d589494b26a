//! Case 12: path and domain routing, the status endpoints, the landing redirect, --secure.

use aether_tests::{Env, Req, json_num, json_str, loopback};

use crate::common::{setup, setup_with};

/// Path mode: `/api/status`, `/api/tunnels/<id>/status` (unknown: 404), unknown tunnel 404,
/// `GET /` redirects to the landing page.
pub fn path_mode_and_status(env: &Env) {
    let s = setup(env);
    let (server, t) = (&s.server, &s.tunnel);
    let r = server.fetch(&Req::get("/api/status"));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.text();
    assert_eq!(json_num(&body, "tunnels"), Some(1), "{body}");
    for key in ["alloc", "totalAlloc", "sys", "heapAlloc"] {
        assert!(json_num(&body, key).is_some(), "mem.{key}: {body}");
    }
    let st = server.tunnel_status(&t.id).expect("the tunnel's status");
    assert_eq!(json_num(&st, "connected_sockets"), Some(10), "{st}");
    assert_eq!(json_num(&st, "max_conn_count"), Some(10), "{st}");
    assert_eq!(server.fetch(&Req::get("/api/tunnels/nope-nope/status")).status, 404);

    let r = server.fetch(&Req::get("/nope-nope/x"));
    assert_eq!(r.status, 404, "unknown tunnel: {}", r.text());
    let r = server.fetch(&Req::get("/"));
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some(loopback().landing.as_str()));
    let r = server.fetch(&Req::get(&format!("/{}", t.id)));
    assert_eq!(r.header("x-echo-target"), Some("/"));
    assert_eq!(s.origin.requests(), 1, "only the proxied request reached the origin");
}

/// Domain mode: `<id>.D` proxies every path (server paths included); the bare host serves
/// registration (localtunnel's `/<name>` too), status and the landing page; unknown
/// subdomains are 404.
pub fn domain_mode(env: &Env) {
    let mut opts = loopback();
    opts.domain = Some("t.test".into());
    let s = setup_with(env, opts);
    let (server, t) = (&s.server, &s.tunnel);
    assert_eq!(t.url, format!("http://{}.t.test", t.id));
    assert_eq!(t.host, format!("{}.t.test", t.id));
    for target in ["/", "/api/status", "/?new", "/x/y?z=1", "/api/tunnels/x/status"] {
        let r = t.fetch(&Req::get(target));
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        assert_eq!(r.header("x-echo-target"), Some(target), "proxied as is");
        assert_eq!(r.echoed("x-forwarded-host"), Some(t.host.as_str()));
    }
    let id = &t.id;
    for host in
        [format!("{}.T.TEST", id.to_uppercase()), format!("{id}.t.test:8080"), format!("{id}.t.test.")]
    {
        let r = t.fetch(&Req::get("/h").header("Host", &host));
        assert_eq!((r.status, r.header("x-echo-target")), (200, Some("/h")), "Host {host}");
    }

    let bare = |target: &str| server.fetch(&Req::get(target).header("Host", "t.test"));
    let r = bare("/api/status");
    assert_eq!((r.status, r.header("x-echo-target")), (200, None), "the bare host's own endpoint");
    assert_eq!(json_num(&r.text(), "tunnels"), Some(1));
    let r = bare(&format!("/api/tunnels/{id}/status"));
    assert_eq!(json_num(&r.text(), "connected_sockets"), Some(10), "{}", r.text());
    assert_eq!(bare("/").status, 302);
    let r = bare("/lt-style-name");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_str(&r.text(), "url").as_deref(), Some("http://lt-style-name.t.test"));
    let r = bare("/?new=other-name");
    assert_eq!(json_str(&r.text(), "url").as_deref(), Some("http://other-name.t.test"));

    let before = s.origin.requests();
    let r = server.fetch(&Req::get("/").header("Host", "nobody-here.t.test"));
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(s.origin.requests(), before);
}

/// `--secure`: URLs are https and X-Forwarded-Proto says https.
pub fn secure_mode(env: &Env) {
    let mut opts = loopback();
    opts.secure = true;
    let s = setup_with(env, opts);
    let t = &s.tunnel;
    assert_eq!(t.url, format!("https://{}/{}", s.server.http_addr(), t.id));
    let r = t.get("/s");
    assert_eq!(r.echoed("x-forwarded-proto"), Some("https"));
    let reg = s.server.fetch(&Req::get("/?new=sec-name").header("Host", "pub.example"));
    assert_eq!(json_str(&reg.text(), "url").as_deref(), Some("https://pub.example/sec-name"));
}
