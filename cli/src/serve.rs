//! `aether serve`: its flags (every field of [`Limits`] among them, SPEC §8), turned into
//! [`ServeOptions`], and the server started on the chosen runtime.
//!
//! Defaults are written here from SPEC §8's table, not read from [`Limits::default`], so the
//! unit tests below catch either side drifting. What each limit does is core's business.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use aether_core::limits::Limits;
use aether_core::options::ServeOptions;
use argh::FromArgs;

use crate::log::{self, LogFormat, say};
use crate::{Runtime, mem, units};

/// run the public server (durations take a unit: 500ms, 10s, 2m, 1h; sizes are in bytes)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
pub struct Serve {
    /// address to listen on (default 0.0.0.0)
    #[argh(option, default = "IpAddr::V4(Ipv4Addr::UNSPECIFIED)")]
    address: IpAddr,
    /// public HTTP port (default 8080; 0 picks a free one, printed at start)
    #[argh(option, default = "8080")]
    port: u16,
    /// port tunnel connections come to (default 62322; 0 picks a free one)
    #[argh(option, default = "62322")]
    tunnel_port: u16,
    /// serve tunnels at <id>.<domain> instead of /<id>
    #[argh(option)]
    domain: Option<String>,
    /// public URLs are https (TLS terminated in front of aether)
    #[argh(switch)]
    secure: bool,
    /// accept AetherLink's tokenless `<id>` handshake line
    #[argh(switch)]
    legacy_handshake: bool,
    /// where GET / redirects
    #[argh(option)]
    landing: Option<String>,
    /// log lines as text (default) or json (one object per line)
    #[argh(option, default = "LogFormat::Text", from_str_fn(log::log_format))]
    log_format: LogFormat,
    /// most tunnel connections per tunnel (default 10)
    #[argh(option, default = "10", from_str_fn(units::positive))]
    max_conn: usize,
    /// most tunnels this server holds; over it, 503 on registration (default 10000)
    #[argh(option, default = "10_000", from_str_fn(units::positive))]
    max_tunnels: usize,
    /// longest request line in bytes; over it, 414 (default 8192)
    #[argh(option, default = "8 * 1024", from_str_fn(units::positive))]
    max_request_line: usize,
    /// longest message head (start line and headers) in bytes; over it, 431 (default 65536)
    #[argh(option, default = "64 * 1024", from_str_fn(units::positive))]
    max_head: usize,
    /// most header fields in a head, 1 to 256; over it, 431 (default 128)
    #[argh(option, default = "128", from_str_fn(units::header_count))]
    max_headers: usize,
    /// longest chunk-size line in bytes; over it, 400 (default 4096)
    #[argh(option, default = "4 * 1024", from_str_fn(units::positive))]
    max_chunk_line: usize,
    /// time for a visitor's head to arrive from its first byte; over it, 408 (default 10s)
    #[argh(option, default = "Duration::from_secs(10)", from_str_fn(units::duration))]
    head_timeout: Duration,
    /// how long an idle keep-alive visitor connection is kept (default 60s)
    #[argh(option, default = "Duration::from_secs(60)", from_str_fn(units::duration))]
    idle_timeout: Duration,
    /// longest tunnel handshake line in bytes, newline included (default 256)
    #[argh(option, default = "256", from_str_fn(units::positive))]
    max_handshake_line: usize,
    /// time for a tunnel connection's handshake line to arrive (default 5s)
    #[argh(option, default = "Duration::from_secs(5)", from_str_fn(units::duration))]
    handshake_timeout: Duration,
    /// requests that may wait for a busy tunnel, 0 for none; over it, 503 (default 256)
    #[argh(option, default = "256", from_str_fn(units::count))]
    max_queue: usize,
    /// how long a request may wait for a tunnel connection; over it, 504 (default 30s)
    #[argh(option, default = "Duration::from_secs(30)", from_str_fn(units::duration))]
    queue_timeout: Duration,
    /// how long a tunnel with no connections keeps its name for its token (default 60s; 0s: none)
    #[argh(option, default = "Duration::from_secs(60)", from_str_fn(units::duration_or_zero))]
    offline_grace: Duration,
}

impl Serve {
    /// The limits the flags ask for.
    fn limits(&self) -> Limits {
        Limits {
            max_request_line: self.max_request_line,
            max_head: self.max_head,
            max_headers: self.max_headers,
            max_chunk_line: self.max_chunk_line,
            head_timeout: self.head_timeout,
            idle_keepalive: self.idle_timeout,
            max_handshake_line: self.max_handshake_line,
            handshake_timeout: self.handshake_timeout,
            max_waiters: self.max_queue,
            wait_timeout: self.queue_timeout,
            offline_grace: self.offline_grace,
            max_tunnels: self.max_tunnels,
            max_conn_per_tunnel: self.max_conn,
        }
    }

    /// The server's options.
    fn options(self) -> ServeOptions {
        let defaults = ServeOptions::default();
        ServeOptions {
            limits: self.limits(),
            address: self.address,
            port: self.port,
            tunnel_port: self.tunnel_port,
            domain: self.domain,
            secure: self.secure,
            legacy_handshake: self.legacy_handshake,
            landing: self.landing.unwrap_or(defaults.landing),
            mem: mem::stats,
        }
    }
}

/// A server of either runtime, kept alive while it is held.
pub enum Server {
    /// On tokio.
    Tokio(aether_tokio::Server),
    /// On smol.
    Smol(aether_smol::Server),
}

impl Server {
    /// Binds both listeners and starts serving.
    pub fn start(rt: Runtime, opts: ServeOptions) -> Result<Server, String> {
        let (address, port, tunnel_port) = (opts.address, opts.port, opts.tunnel_port);
        let started = match rt {
            Runtime::Tokio => aether_tokio::serve(opts, log::log_server).map(Server::Tokio),
            Runtime::Smol => aether_smol::serve(opts, log::log_server).map(Server::Smol),
        };
        started.map_err(|e| {
            format!("cannot listen on {address} ports {port} and {tunnel_port}: {e} (is another server running? pick others with --port and --tunnel-port)")
        })
    }

    /// The bound HTTP and tunnel addresses.
    pub fn addrs(&self) -> (SocketAddr, SocketAddr) {
        match self {
            Server::Tokio(s) => (s.http_addr(), s.tunnel_addr()),
            Server::Smol(s) => (s.http_addr(), s.tunnel_addr()),
        }
    }
}

/// Runs `aether serve` until the process is stopped.
pub fn run(rt: Runtime, s: Serve) -> Result<(), String> {
    log::set_format(s.log_format);
    let server = Server::start(rt, s.options())?;
    let (http, tunnel) = server.addrs();
    if log::json() {
        say!(r#"{{"event":"listening","http":"{http}","tunnel":"{tunnel}"}}"#);
    } else {
        say!("aether: serving on http://{http}, tunnel connections on {tunnel}");
    }
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Serve, String> {
        Serve::from_args(&["serve"], args).map_err(|e| e.output)
    }

    #[test]
    fn defaults_are_spec_section_8() {
        assert_eq!(parse(&[]).unwrap().limits(), Limits::default());
        let o = parse(&[]).unwrap().options();
        let d = ServeOptions::default();
        assert_eq!(
            (o.address, o.port, o.tunnel_port, o.landing),
            (d.address, d.port, d.tunnel_port, d.landing)
        );
    }

    #[test]
    fn every_limit_flag_reaches_its_field() {
        type Set = fn(&mut Limits);
        let cases: [(&str, &str, Set); 13] = [
            ("--max-conn", "3", |l| l.max_conn_per_tunnel = 3),
            ("--max-tunnels", "7", |l| l.max_tunnels = 7),
            ("--max-request-line", "100", |l| l.max_request_line = 100),
            ("--max-head", "2000", |l| l.max_head = 2000),
            ("--max-headers", "3", |l| l.max_headers = 3),
            ("--max-chunk-line", "40", |l| l.max_chunk_line = 40),
            ("--head-timeout", "300ms", |l| l.head_timeout = Duration::from_millis(300)),
            ("--idle-timeout", "2m", |l| l.idle_keepalive = Duration::from_secs(120)),
            ("--max-handshake-line", "64", |l| l.max_handshake_line = 64),
            ("--handshake-timeout", "1s", |l| l.handshake_timeout = Duration::from_secs(1)),
            ("--max-queue", "0", |l| l.max_waiters = 0),
            ("--queue-timeout", "45s", |l| l.wait_timeout = Duration::from_secs(45)),
            ("--offline-grace", "0s", |l| l.offline_grace = Duration::ZERO),
        ];
        for (flag, value, set) in cases {
            let mut want = Limits::default();
            set(&mut want);
            assert_ne!(want, Limits::default(), "{flag} {value} is a default: the case proves nothing");
            assert_eq!(parse(&[flag, value]).unwrap().limits(), want, "{flag} {value}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_expected_form() {
        for (flag, value, says) in [
            ("--head-timeout", "10", "e.g. 500ms"),
            ("--queue-timeout", "0s", "zero"),
            ("--max-conn", "0", "at least 1"),
            ("--max-headers", "300", "at most 256"),
            ("--max-head", "64k", "whole number"),
        ] {
            let e = parse(&[flag, value]).unwrap_err();
            assert!(e.contains(flag) && e.contains(says), "{flag} {value}: {e}");
        }
    }

    #[test]
    fn other_flags_reach_their_options() {
        let o = parse(&[
            "--address",
            "127.0.0.1",
            "--port",
            "0",
            "--tunnel-port",
            "1",
            "--domain",
            "t.example",
            "--secure",
            "--legacy-handshake",
            "--landing",
            "https://example.com/",
        ])
        .unwrap()
        .options();
        assert_eq!(o.address, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!((o.port, o.tunnel_port), (0, 1));
        assert_eq!(o.domain.as_deref(), Some("t.example"));
        assert!(o.secure && o.legacy_handshake);
        assert_eq!(o.landing, "https://example.com/");
    }
}
