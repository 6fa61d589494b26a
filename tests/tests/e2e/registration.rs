//! Case 1: registration on the server's HTTP port.

use aether_core::id::TunnelId;
use aether_core::options::ShareStatus;
use aether_tests::{Env, Origin, Req, Response, json_num, json_str};

use crate::common::SOON;

fn is_token(t: &str) -> bool {
    t.len() == 32 && t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn register(server: &aether_tests::Server, target: &str) -> Response {
    server.fetch(&Req::get(target).header("Host", "example.org:1234"))
}

/// `GET /?new`: 200 JSON with a random `adjective-color-animal` id, the tunnel port, the
/// connection count, a full URL and a token; two registrations get different ids and tokens.
pub fn random_name(env: &Env) {
    let server = env.server();
    let r = register(&server, "/?new");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").is_some_and(|c| c.contains("json")), "{:?}", r.headers);
    let body = r.text();
    let id = json_str(&body, "id").expect("an id");
    let words: Vec<&str> = id.split('-').collect();
    assert!(
        words.len() == 3 && words.iter().all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())),
        "not adjective-color-animal: {id}"
    );
    assert_eq!(json_num(&body, "port"), Some(u64::from(server.tunnel_addr().port())), "{body}");
    assert_eq!(json_num(&body, "max_conn_count"), Some(10), "{body}");
    assert_eq!(json_str(&body, "url"), Some(format!("http://example.org:1234/{id}")), "{body}");
    let token = json_str(&body, "token").expect("a token");
    assert!(is_token(&token), "token {token:?}");

    let again = register(&server, "/?new").text();
    let (id2, token2) = (json_str(&again, "id").unwrap(), json_str(&again, "token").unwrap());
    assert_ne!(id, id2);
    assert_ne!(token, token2);
    // Registered, not yet connected: the server knows it.
    assert!(server.tunnel_status(&id).is_some());
}

/// `GET /?new=<name>` takes that name; asking again without its token is 409 (held), with the
/// token it resumes the same tunnel, with another token it is still 409.
pub fn named(env: &Env) {
    let server = env.server();
    let r = register(&server, "/?new=my-name-1");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.text();
    assert_eq!(json_str(&body, "id").as_deref(), Some("my-name-1"));
    assert_eq!(json_str(&body, "url").as_deref(), Some("http://example.org:1234/my-name-1"));
    let token = json_str(&body, "token").unwrap();

    let taken = register(&server, "/?new=my-name-1");
    assert_eq!(taken.status, 409, "{}", taken.text());
    assert!(taken.header("retry-after").is_some(), "409 in grace says when it frees up: {:?}", taken.headers);

    let other = json_str(&register(&server, "/?new").text(), "token").unwrap();
    let wrong = server.fetch(&Req::get("/?new=my-name-1").header("Aether-Tunnel-Token", &other));
    assert_eq!(wrong.status, 409, "another tunnel's token does not resume: {}", wrong.text());

    let resumed = server.fetch(&Req::get("/?new=my-name-1").header("Aether-Tunnel-Token", &token));
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    assert_eq!(json_str(&resumed.text(), "id").as_deref(), Some("my-name-1"));
}

/// Names breaking the 4–63 `a-z 0-9 -` rule: 403 with a message saying the rule.
pub fn invalid_names(env: &Env) {
    let server = env.server();
    let long = "a".repeat(64);
    for name in ["abc", "MyApp", "-abcd", "abcd-", "ab_cd", "ab.cd", long.as_str()] {
        let r = register(&server, &format!("/?new={name}"));
        assert_eq!(r.status, 403, "{name}: {}", r.text());
        assert!(r.text().contains("4 to 63"), "{name}: the message says the rule: {}", r.text());
    }
    assert!(server.tunnel_status("abcd").is_none(), "nothing was registered");
    let ok = register(&server, &format!("/?new={}", "a".repeat(63)));
    assert_eq!(ok.status, 200, "63 characters is fine: {}", ok.text());
}

/// A name held by a connected client: 409 to anyone else, a second client with it gives up,
/// and the holder keeps serving.
pub fn taken_while_connected(env: &Env) {
    let origin = Origin::start();
    let server = env.server();
    let holder = env.named_tunnel(&server, origin.port(), "held-name");
    assert_eq!(holder.url, format!("http://{}/held-name", server.http_addr()));

    let r = register(&server, "/?new=held-name");
    assert_eq!(r.status, 409, "{}", r.text());

    let mut opts = env.share_options(&server, origin.port());
    opts.subdomain = Some(TunnelId::parse("held-name").unwrap());
    let second = env.share(opts);
    match second.wait_online(SOON) {
        ShareStatus::Fatal(why) => assert!(
            why.contains("the tunnel name `held-name` is in use by another client"),
            "the second client gives up because the name is held (409), not for another reason: {why}"
        ),
        other => panic!("a second client must not get a held name: {other:?}"),
    }
    drop(second);

    let r = holder.get("/still-mine");
    assert_eq!((r.status, r.header("x-echo-target")), (200, Some("/still-mine")));
    assert_eq!(origin.hits("/still-mine"), 1);
}
