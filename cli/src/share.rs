//! `aether share`: its flags, the embedded loopback server when none is given, and when the
//! client stops.
//!
//! Stopping rule: a server that cannot be reached at the first registration ends the command
//! (exit 1, "is --server right?"), since retrying a wrong address forever helps no one. Once
//! the tunnel has been online, a lost server is only retried with backoff: the command ends
//! only on a fatal verdict (name taken or refused). The reconnecting itself is core's supervisor.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use aether_core::id::TunnelId;
use aether_core::options::{Report, ServeOptions, ShareOptions};
use aether_core::supervisor::{ClientEvent, RegisterFailure};
use argh::FromArgs;

use crate::log::{self, say};
use crate::serve::Server;
use crate::{Runtime, mem, units};

/// share a local port through a server
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "share")]
pub struct Share {
    /// the local port to share
    #[argh(positional)]
    port: u16,
    /// server to register with (host:port or http://host:port); default: $AETHER_SERVER, else an
    /// embedded server on loopback
    #[argh(option)]
    server: Option<String>,
    /// the tunnel name to ask for
    #[argh(option)]
    subdomain: Option<String>,
    /// host of the local service (default 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    local_host: String,
    /// print one line per request
    #[argh(switch)]
    print_requests: bool,
    /// the server is AetherLink's: send a bare `<id>` line
    #[argh(switch)]
    legacy: bool,
    /// most tunnel connections to keep (default: as many as the server offers, which caps it)
    #[argh(option, from_str_fn(units::positive))]
    max_conn: Option<usize>,
    /// time allowed to connect to the local service; then 502 (default 5s)
    #[argh(option, default = "Duration::from_secs(5)", from_str_fn(units::duration))]
    origin_timeout: Duration,
}

impl Share {
    /// The client's options, registering with `server`.
    fn options(&self, server: &str, subdomain: Option<TunnelId>) -> ShareOptions {
        ShareOptions {
            subdomain,
            local_host: self.local_host.clone(),
            legacy: self.legacy,
            max_conns: self.max_conn,
            origin_timeout: self.origin_timeout,
            ..ShareOptions::new(server, self.port)
        }
    }
}

/// Where the client stands, as the command sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// No registration has succeeded yet.
    Starting,
    /// Registered at least once; the first public URL.
    Online(String),
    /// The first registration found no server.
    Unreachable,
    /// The client gave up; what the user must fix.
    Fatal(String),
}

/// The phase, set from the client's reports and waited on by the main thread.
struct Watch {
    phase: Mutex<Phase>,
    changed: Condvar,
}

impl Watch {
    fn new() -> Self {
        Self { phase: Mutex::new(Phase::Starting), changed: Condvar::new() }
    }

    fn see(&self, event: &ClientEvent) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        let next = match (&*phase, event) {
            (Phase::Starting, ClientEvent::Online { url, .. }) => Phase::Online(url.clone()),
            (Phase::Starting, ClientEvent::RegisterRetry { why: RegisterFailure::Unreachable, .. }) => {
                Phase::Unreachable
            }
            (Phase::Starting | Phase::Online(_), ClientEvent::Fatal { error }) => {
                Phase::Fatal(error.to_string())
            }
            _ => return,
        };
        *phase = next;
        self.changed.notify_all();
    }

    /// Waits (at most `timeout`, if given) until the phase is not `Starting` and not `Online`
    /// when `past_online`; returns the phase then.
    fn wait(&self, timeout: Option<Duration>, past_online: bool) -> Phase {
        let waiting =
            |p: &mut Phase| matches!(p, Phase::Starting) || (past_online && matches!(p, Phase::Online(_)));
        let guard = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        match timeout {
            Some(t) => self
                .changed
                .wait_timeout_while(guard, t, waiting)
                .map_or_else(|e| e.into_inner().0.clone(), |g| g.0.clone()),
            None => self.changed.wait_while(guard, waiting).unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// Runs `aether share` until the client gives up.
pub fn run(rt: Runtime, s: Share) -> Result<(), String> {
    let subdomain = match &s.subdomain {
        Some(name) => Some(TunnelId::parse(name).map_err(|e| format!("--subdomain {name}: {e}"))?),
        None => None,
    };
    let server_flag =
        s.server.clone().or_else(|| std::env::var("AETHER_SERVER").ok().filter(|v| !v.is_empty()));
    // No server given: run one on loopback in this process, so one command shows a working tunnel.
    let (_embedded, server) = match server_flag {
        Some(server) => (None, server),
        None => {
            let opts = ServeOptions {
                address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 0,
                tunnel_port: 0,
                mem: mem::stats,
                ..ServeOptions::default()
            };
            let embedded = Server::start(rt, opts)?;
            let server = embedded.addrs().0.to_string();
            say!("aether: no --server given; started an embedded server on http://{server}");
            (Some(embedded), server)
        }
    };
    let opts = s.options(&server, subdomain);
    let origin = opts.origin();
    let watch = Arc::new(Watch::new());
    let (seen, print_requests) = (watch.clone(), s.print_requests);
    let report = Arc::new(move |r: &Report| {
        if let Report::Client(event) = r {
            seen.see(event);
        }
        log::print_report(r, print_requests)
    });
    // Held, never called: dropping it stops the client.
    let _client: Box<dyn std::any::Any> = match rt {
        Runtime::Tokio => aether_tokio::share(opts, report).map(|c| Box::new(c) as Box<dyn std::any::Any>),
        Runtime::Smol => aether_smol::share(opts, report).map(|c| Box::new(c) as Box<dyn std::any::Any>),
    }
    .map_err(|e| format!("cannot start the client: {e}"))?;
    let mut phase = watch.wait(Some(Duration::from_secs(30)), false);
    if phase == Phase::Starting {
        say!("aether: still trying to reach {server}; will keep retrying");
        phase = watch.wait(None, false);
    }
    if let Phase::Online(url) = &phase {
        println!("{url}");
        say!("aether: forwarding {url} -> http://{origin}");
        phase = watch.wait(None, true);
    }
    match phase {
        Phase::Unreachable => {
            Err(format!("cannot reach the server at {server}: is it running, and is --server right?"))
        }
        Phase::Fatal(why) => Err(why),
        Phase::Starting | Phase::Online(_) => Err("the client stopped".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_core::supervisor::FatalError;

    fn parse(args: &[&str]) -> Share {
        Share::from_args(&["share"], args).unwrap_or_else(|e| panic!("{}", e.output))
    }

    #[test]
    fn flags_reach_the_client_options() {
        let defaults = parse(&["3000"]).options("s:1", None);
        assert_eq!(defaults, ShareOptions::new("s:1", 3000));
        let s = parse(&[
            "3000",
            "--max-conn",
            "1",
            "--origin-timeout",
            "250ms",
            "--local-host",
            "::1",
            "--legacy",
        ]);
        let o = s.options("s:1", None);
        assert_eq!(o.max_conns, Some(1));
        assert_eq!(o.origin_timeout, Duration::from_millis(250));
        assert_eq!(o.origin(), "[::1]:3000");
        assert!(o.legacy);
        assert!(Share::from_args(&["share"], &["3000", "--max-conn", "0"]).is_err());
    }

    fn online() -> ClientEvent {
        ClientEvent::Online { id: TunnelId::parse("abcd").unwrap(), url: "http://x/abcd".into(), conns: 1 }
    }

    fn unreachable() -> ClientEvent {
        ClientEvent::RegisterRetry { after: Duration::from_secs(1), why: RegisterFailure::Unreachable }
    }

    #[test]
    fn unreachable_stops_only_before_the_first_success() {
        let w = Watch::new();
        w.see(&ClientEvent::RegisterRetry { after: Duration::from_secs(1), why: RegisterFailure::TimedOut });
        assert_eq!(w.wait(Some(Duration::ZERO), false), Phase::Starting);
        w.see(&unreachable());
        assert_eq!(w.wait(Some(Duration::ZERO), false), Phase::Unreachable);

        let w = Watch::new();
        w.see(&online());
        w.see(&unreachable());
        assert_eq!(w.wait(Some(Duration::ZERO), true), Phase::Online("http://x/abcd".into()));
        let error = FatalError::NameTaken { name: None, message: "taken".into() };
        w.see(&ClientEvent::Fatal { error: error.clone() });
        assert_eq!(w.wait(None, true), Phase::Fatal(error.to_string()));
    }
}
