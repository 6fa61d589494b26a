//! The command line: every flag of `aether serve` and `aether share`, and how
//! each reaches [`ServeOptions`], [`Limits`] or [`ShareOptions`].
//!
//! Every limit of SPEC §8 that aether enforces is a `serve` flag. A flag left
//! out keeps [`Limits::default()`], so the defaults live in one place (core);
//! the help text repeats them for the reader. Sizes are bytes; durations are
//! a number with a unit (`500ms`, `10s`, `2m`, `1h`) or bare seconds. It does
//! not run anything: `main` does.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use aether_core::limits::Limits;
use argh::FromArgs;

/// aether: make a service on this machine reachable at a public URL.
#[derive(FromArgs)]
pub struct Args {
    /// async runtime: tokio (default) or smol
    #[argh(option, default = "Runtime::Tokio", from_str_fn(runtime))]
    pub runtime: Runtime,
    /// print the version and exit
    #[argh(switch, short = 'V')]
    pub version: bool,
    #[argh(subcommand)]
    pub command: Option<Command>,
}

/// Which runtime crate runs the server or client.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Runtime {
    /// `aether-tokio`.
    Tokio,
    /// `aether-smol`.
    Smol,
}

fn runtime(s: &str) -> Result<Runtime, String> {
    match s {
        "tokio" => Ok(Runtime::Tokio),
        "smol" => Ok(Runtime::Smol),
        _ => Err(format!("unknown runtime `{s}`: use tokio or smol")),
    }
}

/// The two commands.
#[derive(FromArgs)]
#[argh(subcommand)]
pub enum Command {
    /// `aether serve`.
    Serve(Serve),
    /// `aether share`.
    Share(Share),
}

/// run the public server
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
pub struct Serve {
    /// address to listen on (default 0.0.0.0)
    #[argh(option, default = "IpAddr::V4(Ipv4Addr::UNSPECIFIED)")]
    pub address: IpAddr,
    /// public HTTP port (default 8080; 0 picks a free one, printed at start)
    #[argh(option, default = "8080")]
    pub port: u16,
    /// port tunnel connections come to (default 62322; 0 picks a free one)
    #[argh(option, default = "62322")]
    pub tunnel_port: u16,
    /// serve tunnels at <id>.<domain> instead of /<id>
    #[argh(option)]
    pub domain: Option<String>,
    /// public URLs are https (TLS terminated in front of aether)
    #[argh(switch)]
    pub secure: bool,
    /// most tunnel connections per tunnel (default 10)
    #[argh(option)]
    pub max_conn: Option<usize>,
    /// accept AetherLink's tokenless `<id>` handshake line
    #[argh(switch)]
    pub legacy_handshake: bool,
    /// where GET / redirects
    #[argh(option)]
    pub landing: Option<String>,
    /// log lines as text (default) or json (one object per line)
    #[argh(option, default = "LogFormat::Text", from_str_fn(log_format))]
    pub log_format: LogFormat,
    /// longest request line in bytes, else 414 (default 8192)
    #[argh(option)]
    pub max_request_line: Option<usize>,
    /// longest request head in bytes, else 431 (default 65536)
    #[argh(option)]
    pub max_head: Option<usize>,
    /// most header fields in a head, else 431 (default 128, at most 256)
    #[argh(option)]
    pub max_headers: Option<usize>,
    /// longest chunk-size line in bytes, else 400 (default 4096)
    #[argh(option)]
    pub max_chunk_line: Option<usize>,
    /// time for a visitor's head to arrive from its first byte, else 408 (default 10s)
    #[argh(option, from_str_fn(duration))]
    pub head_timeout: Option<Duration>,
    /// how long an idle keep-alive visitor connection is kept (default 60s)
    #[argh(option, from_str_fn(duration))]
    pub idle_timeout: Option<Duration>,
    /// longest tunnel handshake line in bytes (default 256)
    #[argh(option)]
    pub max_handshake_line: Option<usize>,
    /// time for a tunnel connection's handshake line (default 5s)
    #[argh(option, from_str_fn(duration))]
    pub handshake_timeout: Option<Duration>,
    /// requests that may wait for a busy tunnel, else 503 (default 256)
    #[argh(option)]
    pub max_queue: Option<usize>,
    /// how long a request waits for a tunnel connection, else 504 (default 30s)
    #[argh(option, from_str_fn(duration))]
    pub queue_timeout: Option<Duration>,
    /// how long a disconnected tunnel keeps its name for its owner (default 60s)
    #[argh(option, from_str_fn(duration))]
    pub offline_grace: Option<Duration>,
    /// most tunnels this server holds, else 503 on registration (default 10000)
    #[argh(option)]
    pub max_tunnels: Option<usize>,
}

impl Serve {
    /// SPEC §8's limits with this command line's flags applied.
    pub fn limits(&self) -> Limits {
        let mut l = Limits::default();
        let set = |field: &mut usize, flag: Option<usize>| *field = flag.unwrap_or(*field);
        let set_time = |field: &mut Duration, flag: Option<Duration>| *field = flag.unwrap_or(*field);
        set(&mut l.max_conn_per_tunnel, self.max_conn.map(|n| n.max(1)));
        set(&mut l.max_request_line, self.max_request_line);
        set(&mut l.max_head, self.max_head);
        set(&mut l.max_headers, self.max_headers);
        set(&mut l.max_chunk_line, self.max_chunk_line);
        set_time(&mut l.head_timeout, self.head_timeout);
        set_time(&mut l.idle_keepalive, self.idle_timeout);
        set(&mut l.max_handshake_line, self.max_handshake_line);
        set_time(&mut l.handshake_timeout, self.handshake_timeout);
        set(&mut l.max_waiters, self.max_queue);
        set_time(&mut l.wait_timeout, self.queue_timeout);
        set_time(&mut l.offline_grace, self.offline_grace);
        set(&mut l.max_tunnels, self.max_tunnels);
        l
    }
}

/// How the server writes its log lines.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LogFormat {
    /// `aether: tunnel x registered`.
    Text,
    /// One JSON object per line.
    Json,
}

fn log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("unknown log format `{s}`: use text or json")),
    }
}

/// share a local port through a server
#[derive(FromArgs)]
#[argh(subcommand, name = "share")]
pub struct Share {
    /// the local port to share
    #[argh(positional)]
    pub port: u16,
    /// server to register with (host:port or http://host:port); default: $AETHER_SERVER, else an
    /// embedded server on loopback
    #[argh(option)]
    pub server: Option<String>,
    /// the tunnel name to ask for
    #[argh(option)]
    pub subdomain: Option<String>,
    /// host of the local service (default 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    pub local_host: String,
    /// tunnel connections to keep open (default: as many as the server offers)
    #[argh(option)]
    pub max_conn: Option<usize>,
    /// print one line per request
    #[argh(switch)]
    pub print_requests: bool,
    /// the server is AetherLink's: send a bare `<id>` line
    #[argh(switch)]
    pub legacy: bool,
}

/// A duration: `250ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration: use e.g. 500ms, 10s, 2m, 1h (a bare number is seconds)");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = |k: u64| n.checked_mul(k).map(Duration::from_secs).ok_or_else(bad);
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(flags: &[&str]) -> Serve {
        match Args::from_args(&["aether"], &[&["serve"], flags].concat()) {
            Ok(Args { command: Some(Command::Serve(s)), .. }) => s,
            Ok(_) => panic!("not serve"),
            Err(e) => panic!("{flags:?}: {}", e.output),
        }
    }

    #[test]
    fn no_flag_keeps_spec_defaults() {
        let l = serve(&[]).limits();
        // SPEC §8's table, read from the spec rather than from Limits::default().
        assert_eq!(l.max_request_line, 8 * 1024);
        assert_eq!((l.max_head, l.max_headers), (64 * 1024, 128));
        assert_eq!(l.head_timeout, Duration::from_secs(10));
        assert_eq!(l.idle_keepalive, Duration::from_secs(60));
        assert_eq!((l.max_handshake_line, l.handshake_timeout), (256, Duration::from_secs(5)));
        assert_eq!((l.max_waiters, l.wait_timeout), (256, Duration::from_secs(30)));
        assert_eq!(l.offline_grace, Duration::from_secs(60));
        assert_eq!((l.max_tunnels, l.max_conn_per_tunnel), (10_000, 10));
        assert_eq!(l, Limits::default());
    }

    #[test]
    fn each_flag_reaches_its_limit() {
        let s = serve(&[
            "--max-conn",
            "3",
            "--max-request-line",
            "101",
            "--max-head",
            "102",
            "--max-headers",
            "103",
            "--max-chunk-line",
            "104",
            "--head-timeout",
            "105ms",
            "--idle-timeout",
            "106s",
            "--max-handshake-line",
            "107",
            "--handshake-timeout",
            "108",
            "--max-queue",
            "109",
            "--queue-timeout",
            "2m",
            "--offline-grace",
            "1h",
            "--max-tunnels",
            "110",
        ]);
        let want = Limits {
            max_conn_per_tunnel: 3,
            max_request_line: 101,
            max_head: 102,
            max_headers: 103,
            max_chunk_line: 104,
            head_timeout: Duration::from_millis(105),
            idle_keepalive: Duration::from_secs(106),
            max_handshake_line: 107,
            handshake_timeout: Duration::from_secs(108),
            max_waiters: 109,
            wait_timeout: Duration::from_secs(120),
            offline_grace: Duration::from_secs(3600),
            max_tunnels: 110,
        };
        assert_eq!(s.limits(), want);
    }

    #[test]
    fn durations_and_their_errors() {
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert_eq!(duration("750ms"), Ok(Duration::from_millis(750)));
        assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("3m"), Ok(Duration::from_secs(180)));
        for bad in ["", "s", "10 s", "1.5s", "-1s", "10d", "99999999999999999999h"] {
            let e = duration(bad).expect_err(bad);
            assert!(e.contains("not a duration") && e.contains("10s"), "{bad}: {e}");
        }
        let e = Args::from_args(&["aether"], &["serve", "--queue-timeout", "soon"]).err().expect("refused");
        assert!(e.output.contains("`soon` is not a duration"), "{}", e.output);
    }

    #[test]
    fn share_max_conn() {
        let Ok(Args { command: Some(Command::Share(s)), .. }) =
            Args::from_args(&["aether"], &["share", "3000", "--max-conn", "2"])
        else {
            panic!("share")
        };
        assert_eq!((s.port, s.max_conn), (3000, Some(2)));
    }
}
