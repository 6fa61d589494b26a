//! Tunnels through a `serve` and a `share` the test spawns: forwarding on every runtime pairing,
//! `AETHER_SERVER`, JSON logs, a taken name, a limit flag end to end, and a server lost after
//! the tunnel was online.

use crate::support::{Aether, Origin, Proxy, get, serve, share, tunnel_id};

#[test]
fn forwards_on_every_runtime_pairing() {
    let origin = Origin::start();
    for (srv, cli) in [("tokio", "tokio"), ("smol", "smol"), ("tokio", "smol"), ("smol", "tokio")] {
        let (server, addr) = serve(srv, &[]);
        let (client, id) = share(cli, &server, addr, origin.port, &["--print-requests", "--max-conn", "2"]);
        assert_eq!(
            get(addr, &format!("/{id}/x?y=1"), &[]),
            (200, "hello from the origin".into()),
            "{srv}/{cli}"
        );
        client.stderr_line("GET /x?y=1 200 ");
        client.stderr_line(&format!("forwarding http://{addr}/{id} -> http://127.0.0.1:{}", origin.port));
    }
}

#[test]
fn aether_server_env_names_the_server() {
    let origin = Origin::start();
    let (server, addr) = serve("tokio", &[]);
    let port = origin.port.to_string();
    let client = Aether::spawn(&["share", &port], &[("AETHER_SERVER", &format!("http://{addr}"))]);
    let id = tunnel_id(&client.stdout_line());
    server.stderr_line(&format!("tunnel {id} online"));
    assert_eq!(get(addr, &format!("/{id}/"), &[]).0, 200);
    assert!(!client.stderr().iter().any(|l| l.contains("embedded")), "{client}");
}

#[test]
fn json_log_lines_parse() {
    let origin = Origin::start();
    let server = Aether::spawn(
        &[
            "--runtime",
            "smol",
            "serve",
            "--address",
            "127.0.0.1",
            "--port",
            "0",
            "--tunnel-port",
            "0",
            "--log-format",
            "json",
        ],
        &[],
    );
    let first: serde_json::Value =
        serde_json::from_str(&server.stderr_line(r#""event":"listening""#)).unwrap();
    let http: std::net::SocketAddr = first["http"].as_str().unwrap().parse().unwrap();
    assert!(first["tunnel"].as_str().unwrap().parse::<std::net::SocketAddr>().is_ok(), "{first}");
    let url = format!("http://{http}");
    let port = origin.port.to_string();
    let client = Aether::spawn(&["share", &port, "--server", &url, "--subdomain", "json-logs"], &[]);
    assert_eq!(tunnel_id(&client.stdout_line()), "json-logs");
    server.stderr_line(r#""event":"online""#);
    let lines = server.stderr();
    let events: Vec<serde_json::Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect();
    for (i, what) in ["registered", "online"].into_iter().enumerate() {
        let e = &events[i + 1];
        assert_eq!((e["event"].as_str(), e["tunnel"].as_str()), (Some(what), Some("json-logs")), "{lines:?}");
        assert!(e["ts"].as_f64().is_some_and(|t| t > 1.0e9), "{e}");
    }
}

#[test]
fn taken_name_exits_1_and_the_holder_keeps_it() {
    let origin = Origin::start();
    for rt in ["tokio", "smol"] {
        let (server, addr) = serve(rt, &[]);
        let (_holder, id) = share(rt, &server, addr, origin.port, &["--subdomain", "taken-name"]);
        assert_eq!(id, "taken-name");
        let (url, port) = (format!("http://{addr}"), origin.port.to_string());
        let mut thief =
            Aether::spawn(&["--runtime", rt, "share", &port, "--server", &url, "--subdomain", &id], &[]);
        assert_eq!(thief.exit().code(), Some(1), "{rt}: {thief}");
        thief.stderr_line("the tunnel name `taken-name` is in use by another client");
        assert_eq!(get(addr, "/taken-name/", &[]).0, 200, "{rt}");
    }
}

#[test]
fn max_headers_flag_end_to_end() {
    let origin = Origin::start();
    for rt in ["tokio", "smol"] {
        let (server, addr) = serve(rt, &["--max-headers", "3"]);
        let (_client, id) = share(rt, &server, addr, origin.port, &[]);
        let path = format!("/{id}/");
        // `get` sends Host and Connection: three fields is the limit, four is one past it.
        assert_eq!(get(addr, &path, &["X-One: 1"]).0, 200, "{rt}");
        assert_eq!(get(addr, &path, &["X-One: 1", "X-Two: 2"]).0, 431, "{rt}");
    }
}

#[test]
fn server_lost_after_online_is_retried_not_fatal() {
    let origin = Origin::start();
    for rt in ["tokio", "smol"] {
        let (mut server, addr) = serve(rt, &[]);
        let (mut client, _id) = share(rt, &server, addr, origin.port, &[]);
        server.kill();
        // Its tunnel connections die, dials fail, it registers again and finds no server.
        // A second failure means the first did not end it (backoff continues).
        client.stderr_lines("registration failed (server unreachable); retrying", 2);
        assert!(client.running(), "{rt}: the client stopped once the server went: {client}");
    }
}

#[test]
fn client_comes_back_on_a_new_server() {
    let origin = Origin::start();
    for rt in ["tokio", "smol"] {
        let (mut first, first_addr) = serve(rt, &[]);
        let proxy = Proxy::start(first_addr);
        let (client, id) = share(rt, &first, proxy.addr, origin.port, &["--subdomain", "comes-back"]);
        assert_eq!(id, "comes-back");
        proxy.switch(None);
        first.kill();
        client.stderr_line("registration failed");
        let (second, second_addr) = serve(rt, &[]);
        proxy.switch(Some(second_addr));
        second.stderr_line("tunnel comes-back online");
        assert_eq!(get(second_addr, "/comes-back/", &[]), (200, "hello from the origin".into()), "{rt}");
    }
}
