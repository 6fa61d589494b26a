//! The binary's answers that need no tunnel: version, help, bad flags, a port in use, an invalid
//! name, and a server that cannot be reached at start.

use std::net::{SocketAddr, TcpListener, TcpStream};

use crate::support::{Aether, run};

const RUNTIMES: [&str; 2] = ["tokio", "smol"];

#[test]
fn version_and_help() {
    let want = format!("aether {}", env!("CARGO_PKG_VERSION"));
    for flag in ["--version", "-V"] {
        assert_eq!(run(&[flag]), (Some(0), want.clone(), String::new()), "{flag}");
    }
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("serve") && out.contains("share") && out.contains("--runtime"), "{out}");
    let (code, out, _) = run(&["serve", "--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--max-conn",
        "--max-tunnels",
        "--max-request-line",
        "--max-head ",
        "--max-headers",
        "--max-chunk-line",
        "--head-timeout",
        "--idle-timeout",
        "--max-handshake-line",
        "--handshake-timeout",
        "--max-queue",
        "--queue-timeout",
        "--offline-grace",
        "--log-format",
    ] {
        assert!(out.contains(flag), "serve --help lacks {flag}: {out}");
    }
    let (code, out, _) = run(&["share", "--help"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("--max-conn") && out.contains("--origin-timeout") && out.contains("AETHER_SERVER"),
        "{out}"
    );
}

#[test]
fn bad_command_lines_exit_1_with_what_is_wrong() {
    for (args, says) in [
        (&[][..], "no command given"),
        (&["--runtime", "async-std", "serve"][..], "use tokio or smol"),
        (&["serve", "--head-timeout", "10"][..], "e.g. 500ms"),
        (&["serve", "--max-headers", "0"][..], "at least 1"),
        (&["serve", "--log-format", "xml"][..], "use text or json"),
        (&["share", "3000", "--max-conn", "many"][..], "not a whole number"),
        (&["share"][..], "port"),
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, Some(1), "{args:?}: {out} {err}");
        assert!(err.contains(says), "{args:?}: stderr {err:?} lacks {says:?}");
    }
}

#[test]
fn port_in_use_exits_1_and_names_the_port() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    for rt in RUNTIMES {
        let (code, _, err) =
            run(&["--runtime", rt, "serve", "--address", "127.0.0.1", "--port", &port, "--tunnel-port", "0"]);
        assert_eq!(code, Some(1), "{rt}: {err}");
        assert!(err.contains(&format!("cannot listen on 127.0.0.1 ports {port} and 0")), "{rt}: {err}");
        assert!(err.contains("--port"), "{rt}: {err}");
    }
}

#[test]
fn invalid_name_exits_1_before_registering() {
    let (code, _, err) = run(&["share", "3000", "--server", "127.0.0.1:1", "--subdomain", "No_Good"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--subdomain No_Good"), "{err}");
    assert!(!err.contains("registration"), "it must not have tried the server: {err}");
}

/// A loopback address where a connection is refused and no other test can start listening:
/// the port is held on 127.0.0.1 by the returned listener, and tests only ever bind 127.0.0.1.
fn refusing() -> (TcpListener, SocketAddr) {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = format!("127.0.0.2:{}", held.local_addr().unwrap().port()).parse().unwrap();
    assert!(TcpStream::connect(addr).is_err(), "{addr} accepted a connection");
    (held, addr)
}

#[test]
fn unreachable_server_at_start_exits_1() {
    let (_held, addr) = refusing();
    for rt in RUNTIMES {
        let mut share =
            Aether::spawn(&["--runtime", rt, "share", "3000", "--server", &format!("http://{addr}")], &[]);
        assert_eq!(share.exit().code(), Some(1), "{rt}: {share}");
        share.stderr_line(&format!(
            "cannot reach the server at http://{addr}: is it running, and is --server right?"
        ));
    }
}

#[test]
fn aether_server_env_is_the_default_server() {
    let (_held, addr) = refusing();
    let mut share = Aether::spawn(&["share", "3000"], &[("AETHER_SERVER", &addr.to_string())]);
    assert_eq!(share.exit().code(), Some(1), "{share}");
    share.stderr_line(&format!("cannot reach the server at {addr}"));
    assert!(!share.stderr().iter().any(|l| l.contains("embedded")), "{share}");
}
