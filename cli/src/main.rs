//! `aether`: expose a local HTTP service at a public URL (`share`), or run the
//! public server (`serve`). Parses flags, picks a runtime, prints what happens.

mod flags;
mod mem;

/// Writes one line to stderr with a single `write`.
///
/// stderr is unbuffered and `eprintln!` writes each formatted piece on its own: five syscalls for
/// one "tunnel … registered" line, and lines of two threads could interleave. A failed write is
/// ignored rather than panicking a server over its log.
macro_rules! say {
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }};
}

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aether_core::hub::ServerEvent;
use aether_core::id::TunnelId;
use aether_core::options::{Report, ServeOptions, ShareOptions, ShareStatus};
use aether_core::supervisor::{ClientEvent, RegisterFailure};
use flags::{Args, Command, LogFormat, Runtime, Serve, Share};

#[global_allocator]
static ALLOC: mem::Counting = mem::Counting;

/// Set once from `--log-format` before the server starts; read by `log_server`.
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    if args.version {
        println!("aether {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let result = match args.command {
        Some(Command::Serve(s)) => serve(args.runtime, s),
        Some(Command::Share(s)) => share(args.runtime, s),
        None => Err("no command given: try `aether share 3000` or `aether --help`".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            say!("aether: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// A server of either runtime, kept alive while it is held.
enum Server {
    Tokio(aether_tokio::Server),
    Smol(aether_smol::Server),
}

impl Server {
    fn start(rt: Runtime, opts: ServeOptions) -> Result<Server, String> {
        let (address, port, tunnel_port) = (opts.address, opts.port, opts.tunnel_port);
        let started = match rt {
            Runtime::Tokio => aether_tokio::serve(opts, log_server).map(Server::Tokio),
            Runtime::Smol => aether_smol::serve(opts, log_server).map(Server::Smol),
        };
        started.map_err(|e| {
            format!("cannot listen on {address} ports {port} and {tunnel_port}: {e} (is another server running? pick others with --port and --tunnel-port)")
        })
    }

    fn addrs(&self) -> (std::net::SocketAddr, std::net::SocketAddr) {
        match self {
            Server::Tokio(s) => (s.http_addr(), s.tunnel_addr()),
            Server::Smol(s) => (s.http_addr(), s.tunnel_addr()),
        }
    }
}

fn serve(rt: Runtime, s: Serve) -> Result<(), String> {
    let limits = s.limits();
    let defaults = ServeOptions::default();
    let opts = ServeOptions {
        address: s.address,
        port: s.port,
        tunnel_port: s.tunnel_port,
        domain: s.domain,
        secure: s.secure,
        legacy_handshake: s.legacy_handshake,
        limits,
        landing: s.landing.unwrap_or(defaults.landing),
        mem: mem::stats,
    };
    JSON_LOGS.store(s.log_format == LogFormat::Json, Ordering::Relaxed);
    let server = Server::start(rt, opts)?;
    let (http, tunnel) = server.addrs();
    if json_logs() {
        say!(r#"{{"event":"listening","http":"{http}","tunnel":"{tunnel}"}}"#);
    } else {
        say!("aether: serving on http://{http}, tunnel connections on {tunnel}");
    }
    loop {
        std::thread::park();
    }
}

fn share(rt: Runtime, s: Share) -> Result<(), String> {
    let subdomain = match s.subdomain {
        Some(name) => Some(TunnelId::parse(&name).map_err(|e| format!("--subdomain {name}: {e}"))?),
        None => None,
    };
    let server_flag = s.server.or_else(|| std::env::var("AETHER_SERVER").ok().filter(|v| !v.is_empty()));
    // No server given: run one on loopback in this process, so one command shows a working tunnel.
    let (embedded, server) = match server_flag {
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
    let mut opts = ShareOptions::new(&server, s.port);
    opts.subdomain = subdomain;
    opts.local_host = s.local_host;
    opts.legacy = s.legacy;
    opts.max_conns = s.max_conn;
    let print_requests = s.print_requests;
    let online = Arc::new(AtomicBool::new(false));
    let (seen, shown_server) = (online.clone(), server.clone());
    let report: Arc<dyn Fn(&Report) + Send + Sync> = Arc::new(move |r: &Report| {
        match r {
            Report::Client(ClientEvent::Online { .. }) => seen.store(true, Ordering::Relaxed),
            // Never reached the server at all: most likely a wrong --server, so say so and stop.
            Report::Client(ClientEvent::RegisterRetry { why: RegisterFailure::Unreachable, .. })
                if !seen.load(Ordering::Relaxed) =>
            {
                say!(
                    "aether: cannot reach the server at {shown_server}: is it running, and is --server right?"
                );
                std::process::exit(1);
            }
            _ => {}
        }
        print_report(r, print_requests)
    });
    let origin = opts.origin();
    let handle = match rt {
        Runtime::Tokio => aether_tokio::share(opts, report).map(ShareHandle::Tokio),
        Runtime::Smol => aether_smol::share(opts, report).map(ShareHandle::Smol),
    }
    .map_err(|e| format!("cannot start the client: {e}"))?;
    match handle.wait_online(Duration::from_secs(30)) {
        ShareStatus::Online(url) => {
            println!("{url}");
            say!("aether: forwarding {url} -> http://{origin}");
        }
        ShareStatus::Fatal(why) => return Err(why),
        ShareStatus::Starting => {
            say!("aether: still trying to reach {server}; will keep retrying");
        }
    }
    let why = handle.wait_fatal();
    drop(embedded);
    Err(why)
}

enum ShareHandle {
    Tokio(aether_tokio::Share),
    Smol(aether_smol::Share),
}

impl ShareHandle {
    fn wait_online(&self, timeout: Duration) -> ShareStatus {
        match self {
            ShareHandle::Tokio(h) => h.wait_online(timeout),
            ShareHandle::Smol(h) => h.wait_online(timeout),
        }
    }

    fn wait_fatal(&self) -> String {
        match self {
            ShareHandle::Tokio(h) => h.wait_fatal(),
            ShareHandle::Smol(h) => h.wait_fatal(),
        }
    }
}

fn print_report(report: &Report, print_requests: bool) {
    match report {
        Report::Request(r) if print_requests => {
            say!("{} {} {} {}ms", r.method, r.path, r.status, r.duration.as_millis())
        }
        Report::Request(_) => {}
        Report::Client(ClientEvent::Online { .. } | ClientEvent::Fatal { .. }) => {}
        Report::Client(ClientEvent::RegisterRetry { after, why }) => {
            say!("aether: registration failed ({why}); retrying in {} ms", after.as_millis())
        }
        Report::Client(ClientEvent::Reregistering { why }) => {
            say!("aether: the server lost the tunnel ({why:?}); registering again")
        }
        Report::Client(ClientEvent::Reconnecting { .. }) => {}
    }
}

/// `--log-format json` was given.
fn json_logs() -> bool {
    JSON_LOGS.load(Ordering::Relaxed)
}

fn log_server(event: &ServerEvent) {
    if json_logs() {
        let (what, id) = match event {
            ServerEvent::Registered { id, resumed: false } => ("registered", id),
            ServerEvent::Registered { id, resumed: true } => ("resumed", id),
            ServerEvent::Online { id } => ("online", id),
            ServerEvent::Offline { id } => ("offline", id),
            ServerEvent::Expired { id } => ("expired", id),
        };
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // Tunnel ids are [a-z0-9-]: nothing to escape.
        return say!(r#"{{"ts":{:.3},"event":"{what}","tunnel":"{id}"}}"#, at.as_secs_f64());
    }
    match event {
        ServerEvent::Registered { id, resumed } => {
            say!("aether: tunnel {id} {}", if *resumed { "resumed" } else { "registered" })
        }
        ServerEvent::Online { id } => say!("aether: tunnel {id} online"),
        ServerEvent::Offline { id } => say!("aether: tunnel {id} offline"),
        ServerEvent::Expired { id } => say!("aether: tunnel {id} expired"),
    }
}
