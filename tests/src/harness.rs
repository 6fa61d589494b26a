//! Runtime pairings and the handles a case drives: one case is written once
//! against [`Env`] and run for each [`Pair`] of server runtime and client runtime.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_core::hub::ServerEvent;
use aether_core::id::TunnelId;
use aether_core::options::{Report, RequestLog, ServeOptions, ShareOptions, ShareStatus};

use crate::client::{Conn, Req, Response, fetch};
use crate::{json_num, poll_for};

/// How long a case may run before it is failed (the suite never hangs).
pub const CASE_LIMIT: Duration = Duration::from_secs(45);
/// How long a `share` may take to register and connect.
pub const ONLINE_LIMIT: Duration = Duration::from_secs(10);

/// A runtime adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rt {
    /// `aether-tokio`.
    Tokio,
    /// `aether-smol`.
    Smol,
}

/// Which runtime runs the server and which runs the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// The runtime of `serve`.
    pub server: Rt,
    /// The runtime of `share`.
    pub client: Rt,
}

impl Pair {
    /// Server on tokio, client on tokio.
    pub const TT: Pair = Pair { server: Rt::Tokio, client: Rt::Tokio };
    /// Server on tokio, client on smol.
    pub const TS: Pair = Pair { server: Rt::Tokio, client: Rt::Smol };
    /// Server on smol, client on tokio.
    pub const ST: Pair = Pair { server: Rt::Smol, client: Rt::Tokio };
    /// Server on smol, client on smol.
    pub const SS: Pair = Pair { server: Rt::Smol, client: Rt::Smol };
}

/// A running server of either runtime; dropping it stops it and closes its sockets.
pub enum Server {
    /// On tokio.
    Tokio(aether_tokio::Server),
    /// On smol.
    Smol(aether_smol::Server),
}

impl Server {
    /// The public HTTP listener.
    pub fn http_addr(&self) -> SocketAddr {
        match self {
            Server::Tokio(s) => s.http_addr(),
            Server::Smol(s) => s.http_addr(),
        }
    }

    /// The tunnel listener.
    pub fn tunnel_addr(&self) -> SocketAddr {
        match self {
            Server::Tokio(s) => s.tunnel_addr(),
            Server::Smol(s) => s.tunnel_addr(),
        }
    }

    /// Stops the server (its `Drop` closes every socket).
    pub fn stop(self) {
        drop(self);
    }

    /// Sends `req` on a fresh connection to the server with `Host: <server address>`.
    pub fn fetch(&self, req: &Req) -> Response {
        fetch(self.http_addr(), &self.http_addr().to_string(), req)
    }

    /// `GET /api/tunnels/<id>/status`: its body when 200, `None` when 404; panics on anything else.
    pub fn tunnel_status(&self, id: &str) -> Option<String> {
        let r = self.fetch(&Req::get(&format!("/api/tunnels/{id}/status")));
        match r.status {
            200 => Some(r.text()),
            404 => None,
            s => panic!("tunnel status for {id}: {s} {}", r.text()),
        }
    }

    /// Tunnel connections the server holds for `id` (0 when unknown).
    pub fn connected(&self, id: &str) -> usize {
        self.tunnel_status(id).and_then(|s| json_num(&s, "connected_sockets")).unwrap_or(0) as usize
    }
}

/// The kind of running client.
enum ShareInner {
    Tokio(aether_tokio::Share),
    Smol(aether_smol::Share),
}

/// A running client of either runtime; dropping it stops it.
pub struct Share {
    inner: ShareInner,
    reports: Arc<Mutex<Vec<Report>>>,
}

impl Share {
    /// Waits until registered (`Online(url)`) or given up (`Fatal`), at most `limit`.
    pub fn wait_online(&self, limit: Duration) -> ShareStatus {
        match &self.inner {
            ShareInner::Tokio(s) => s.wait_online(limit),
            ShareInner::Smol(s) => s.wait_online(limit),
        }
    }

    /// Everything the client reported so far.
    pub fn reports(&self) -> Vec<Report> {
        self.reports.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The request lines reported so far (what `--print-requests` prints).
    pub fn request_logs(&self) -> Vec<RequestLog> {
        self.reports()
            .into_iter()
            .filter_map(|r| match r {
                Report::Request(log) => Some(log),
                Report::Client(_) => None,
            })
            .collect()
    }

    /// Stops the client (its `Drop` closes its connections).
    pub fn stop(self) {
        drop(self);
    }
}

/// `ServeOptions` for tests: loopback, ephemeral ports, defaults otherwise.
pub fn loopback() -> ServeOptions {
    ServeOptions {
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        tunnel_port: 0,
        ..ServeOptions::default()
    }
}

fn log_server(e: &ServerEvent) {
    eprintln!("[server] {e:?}");
}

/// What one case gets: the pairing it runs under, and ways to start its parts.
#[derive(Debug, Clone, Copy)]
pub struct Env {
    /// The pairing.
    pub pair: Pair,
}

impl Env {
    /// Starts a server on the pairing's server runtime; panics if it fails.
    pub fn serve(&self, opts: ServeOptions) -> Server {
        self.try_serve(opts).unwrap_or_else(|e| panic!("serve on {:?} failed: {e}", self.pair.server))
    }

    /// Starts a server on the pairing's server runtime.
    pub fn try_serve(&self, opts: ServeOptions) -> std::io::Result<Server> {
        Ok(match self.pair.server {
            Rt::Tokio => Server::Tokio(aether_tokio::serve(opts, log_server)?),
            Rt::Smol => Server::Smol(aether_smol::serve(opts, log_server)?),
        })
    }

    /// A server with [`loopback`] options.
    pub fn server(&self) -> Server {
        self.serve(loopback())
    }

    /// Starts a client on the pairing's client runtime; panics if it fails to start.
    pub fn share(&self, opts: ShareOptions) -> Share {
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = reports.clone();
        let report: Arc<dyn Fn(&Report) + Send + Sync> = Arc::new(move |r: &Report| {
            if let Report::Client(e) = r {
                eprintln!("[client] {e:?}");
            }
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(r.clone());
        });
        let inner = match self.pair.client {
            Rt::Tokio => aether_tokio::share(opts, report).map(ShareInner::Tokio),
            Rt::Smol => aether_smol::share(opts, report).map(ShareInner::Smol),
        }
        .unwrap_or_else(|e| panic!("share on {:?} failed: {e}", self.pair.client));
        Share { inner, reports }
    }

    /// Share options for `origin_port` through `server`.
    pub fn share_options(&self, server: &Server, origin_port: u16) -> ShareOptions {
        ShareOptions::new(&server.http_addr().to_string(), origin_port)
    }

    /// A tunnel under a random name to `origin_port`, online with all its connections.
    pub fn tunnel(&self, server: &Server, origin_port: u16) -> Tunnel {
        self.tunnel_with(server, self.share_options(server, origin_port))
    }

    /// A tunnel under `name` to `origin_port`, online with all its connections.
    pub fn named_tunnel(&self, server: &Server, origin_port: u16, name: &str) -> Tunnel {
        let mut opts = self.share_options(server, origin_port);
        opts.subdomain = Some(TunnelId::parse(name).expect("a valid tunnel name"));
        self.tunnel_with(server, opts)
    }

    /// Starts a client with `opts`, waits until it is online and the server holds all its connections.
    pub fn tunnel_with(&self, server: &Server, opts: ShareOptions) -> Tunnel {
        let want = opts.max_conns;
        let share = self.share(opts);
        let url = match share.wait_online(ONLINE_LIMIT) {
            ShareStatus::Online(url) => url,
            other => panic!("the client did not come online: {other:?}"),
        };
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let (host, id) = match rest.split_once('/') {
            // Path mode: http://<host>/<id>
            Some((_, id)) => (server.http_addr().to_string(), id.to_owned()),
            // Domain mode: http://<id>.<domain>
            None => (rest.to_owned(), rest.split('.').next().unwrap_or_default().to_owned()),
        };
        let domain = !rest.contains('/');
        let t = Tunnel { share, id, url, host, domain, server: server.http_addr() };
        t.wait_connected(server, want);
        t
    }
}

/// A running `share`, registered, with the server holding its connections.
pub struct Tunnel {
    /// The client.
    pub share: Share,
    /// The tunnel's name.
    pub id: String,
    /// The public URL the client printed.
    pub url: String,
    /// The `Host` visitors send (the tunnel's host in domain mode, the server's address in path mode).
    pub host: String,
    /// Domain mode (the target is not prefixed).
    pub domain: bool,
    /// The server's HTTP address.
    pub server: SocketAddr,
}

impl Tunnel {
    /// Waits until the server holds as many connections as the client keeps (`max` caps the server's count).
    pub fn wait_connected(&self, server: &Server, max: Option<usize>) {
        poll_for(ONLINE_LIMIT, &format!("tunnel {} to hold its connections", self.id), || {
            let st = server.tunnel_status(&self.id)?;
            let held = json_num(&st, "connected_sockets")? as usize;
            let cap = json_num(&st, "max_conn_count")? as usize;
            (held > 0 && held >= cap.min(max.unwrap_or(usize::MAX))).then_some(())
        });
    }

    /// The visitor's request target for the origin path `rest` (prefixed by `/<id>` in path mode).
    pub fn target(&self, rest: &str) -> String {
        if self.domain { rest.to_owned() } else { format!("/{}{rest}", self.id) }
    }

    /// A new visitor connection to the server.
    pub fn connect(&self) -> Conn {
        Conn::open(self.server)
    }

    /// Sends `req` (its target already made with [`target`](Tunnel::target)) on a fresh connection.
    pub fn fetch(&self, req: &Req) -> Response {
        fetch(self.server, &self.host, req)
    }

    /// `GET` of the origin path `rest` on a fresh connection.
    pub fn get(&self, rest: &str) -> Response {
        self.fetch(&Req::get(&self.target(rest)))
    }
}

/// Runs `case` under `pair` on its own thread, failing it if it takes longer than [`CASE_LIMIT`].
pub fn run(pair: Pair, case: fn(&Env)) {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::Builder::new()
        .name(format!("case-{pair:?}"))
        .spawn(move || {
            let outcome = std::panic::catch_unwind(|| case(&Env { pair }));
            let _ = tx.send(outcome);
        })
        .expect("spawn the case");
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(Ok(())) => {
            let _ = worker.join();
        }
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("the case did not finish within {CASE_LIMIT:?} ({pair:?})"),
    }
}
