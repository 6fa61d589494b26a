//! Runtime pairings and the handles a case drives: one case is written once
//! against [`Env`] and run for each [`Pair`] of server runtime and client runtime.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aether_core::hub::ServerEvent;
use aether_core::id::TunnelId;
use aether_core::options::{Report, RequestLog, ServeOptions, ShareOptions, ShareStatus};

use crate::client::{Conn, Req, Response, fetch};
use crate::{json_num, poll_for, slack};

/// How long a case may run before it is failed (the suite never hangs); stretched by [`slack`].
pub const CASE_LIMIT: Duration = Duration::from_secs(45);
/// How long a `share` may take to register and connect; stretched by [`slack`].
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

/// A part of a case that the harness can stop from outside the case (a server or client).
type Slot<T> = Arc<Mutex<Option<T>>>;

fn take<T>(slot: &Slot<T>) -> MutexGuard<'_, Option<T>> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// A server of one runtime.
enum RunningServer {
    Tokio(aether_tokio::Server),
    Smol(aether_smol::Server),
}

impl RunningServer {
    /// The HTTP and tunnel listeners.
    fn addrs(&self) -> (SocketAddr, SocketAddr) {
        match self {
            RunningServer::Tokio(s) => (s.http_addr(), s.tunnel_addr()),
            RunningServer::Smol(s) => (s.http_addr(), s.tunnel_addr()),
        }
    }
}

/// A running server of either runtime; dropping it stops it and closes its sockets.
///
/// The case owns it, but its [`Env`] can stop it too, so a case that times out
/// leaves no server behind.
pub struct Server {
    http: SocketAddr,
    tunnel: SocketAddr,
    running: Slot<RunningServer>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let stopped = take(&self.running).take();
        drop(stopped);
    }
}

impl Server {
    /// The public HTTP listener.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The tunnel listener.
    pub fn tunnel_addr(&self) -> SocketAddr {
        self.tunnel
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

/// A running client of either runtime; dropping it stops it (so can its [`Env`], like a [`Server`]).
pub struct Share {
    inner: Slot<ShareInner>,
    reports: Arc<Mutex<Vec<Report>>>,
}

impl Drop for Share {
    fn drop(&mut self) {
        let stopped = take(&self.inner).take();
        drop(stopped);
    }
}

impl Share {
    /// Waits until registered (`Online(url)`) or given up (`Fatal`), at most `slack(limit)`.
    pub fn wait_online(&self, limit: Duration) -> ShareStatus {
        let deadline = Instant::now() + slack(limit);
        loop {
            // In slices, so the harness can stop the client meanwhile.
            let slice = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(50));
            let status = match &*take(&self.inner) {
                Some(ShareInner::Tokio(s)) => s.wait_online(slice),
                Some(ShareInner::Smol(s)) => s.wait_online(slice),
                None => ShareStatus::Fatal("stopped by the harness".into()),
            };
            if status != ShareStatus::Starting || Instant::now() >= deadline {
                return status;
            }
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

/// Stops one server or client of a case, if it still runs.
type Stopper = Box<dyn Fn() + Send>;

/// What one case gets: the pairing it runs under, and ways to start its parts.
///
/// It keeps a way to stop every server and client it started, used when the case times out.
#[derive(Clone)]
pub struct Env {
    /// The pairing.
    pub pair: Pair,
    started: Arc<Mutex<Vec<Stopper>>>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("pair", &self.pair).finish_non_exhaustive()
    }
}

impl Env {
    /// An environment for `pair` with nothing started yet.
    pub fn new(pair: Pair) -> Env {
        Env { pair, started: Arc::default() }
    }

    /// Remembers how to stop `slot` from outside the case.
    fn track<T: Send + 'static>(&self, slot: &Slot<T>) {
        let slot = slot.clone();
        let stop: Stopper = Box::new(move || drop(take(&slot).take()));
        self.started.lock().unwrap_or_else(|e| e.into_inner()).push(stop);
    }

    /// Stops every server and client this environment started that still runs.
    pub fn stop_all(&self) {
        let started = std::mem::take(&mut *self.started.lock().unwrap_or_else(|e| e.into_inner()));
        for stop in started {
            stop();
        }
    }

    /// Starts a server on the pairing's server runtime; panics if it fails.
    pub fn serve(&self, opts: ServeOptions) -> Server {
        self.try_serve(opts).unwrap_or_else(|e| panic!("serve on {:?} failed: {e}", self.pair.server))
    }

    /// Starts a server on the pairing's server runtime.
    pub fn try_serve(&self, opts: ServeOptions) -> std::io::Result<Server> {
        let running = match self.pair.server {
            Rt::Tokio => RunningServer::Tokio(aether_tokio::serve(opts, log_server)?),
            Rt::Smol => RunningServer::Smol(aether_smol::serve(opts, log_server)?),
        };
        let (http, tunnel) = running.addrs();
        let running = Arc::new(Mutex::new(Some(running)));
        self.track(&running);
        Ok(Server { http, tunnel, running })
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
        let inner = Arc::new(Mutex::new(Some(inner)));
        self.track(&inner);
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

/// Runs `case` under `pair` on its own thread, failing it if it takes longer than `slack(CASE_LIMIT)`.
///
/// A case that times out has its servers and clients stopped before the failure is reported, so
/// its sockets do not linger into later tests; its thread then fails on its own at its next read.
pub fn run(pair: Pair, case: fn(&Env)) {
    run_within(pair, case, slack(CASE_LIMIT));
}

/// [`run`] with a time limit of `limit`.
fn run_within(pair: Pair, case: fn(&Env), limit: Duration) {
    let env = Env::new(pair);
    let case_env = env.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::Builder::new()
        .name(format!("case-{pair:?}"))
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&case_env)));
            let _ = tx.send(outcome);
        })
        .expect("spawn the case");
    match rx.recv_timeout(limit) {
        Ok(Ok(())) => {
            let _ = worker.join();
        }
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => {
            env.stop_all();
            panic!(
                "the case did not finish within {limit:?} ({pair:?}); its servers and clients were stopped"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::wait_until;

    /// Set once the hanging case below has returned.
    static HUNG_CASE_ENDED: AtomicBool = AtomicBool::new(false);

    /// A case that waits on a kept-alive connection to its own server for a minute.
    fn hangs(env: &Env) {
        let server = env.server();
        let mut conn = Conn::open(server.http_addr());
        assert_eq!(conn.exchange(&server.http_addr().to_string(), &Req::get("/api/status")).status, 200);
        conn.set_read_timeout(Duration::from_secs(60));
        let _ = conn.try_response("GET");
        HUNG_CASE_ENDED.store(true, Ordering::SeqCst);
    }

    #[test]
    fn a_timed_out_case_fails_and_its_server_is_stopped() {
        let failed = std::panic::catch_unwind(|| run_within(Pair::TS, hangs, Duration::from_millis(500)));
        let message = failed.expect_err("the case must fail").downcast::<String>().expect("a message");
        assert!(message.contains("did not finish"), "{message}");
        // The server was stopped, so the case's read ends at once instead of after a minute.
        wait_until(Duration::from_secs(10), "the hung case to return", || {
            HUNG_CASE_ENDED.load(Ordering::SeqCst)
        });
    }

    #[test]
    fn stop_all_stops_servers_and_clients() {
        let env = Env::new(Pair::ST);
        let origin = crate::Origin::start();
        let server = env.server();
        let t = env.tunnel(&server, origin.port());
        let mut kept = Conn::open(server.http_addr());
        assert_eq!(kept.exchange(&server.http_addr().to_string(), &Req::get("/api/status")).status, 200);
        env.stop_all();
        assert!(kept.closed_within(Duration::from_secs(10)), "the server's connections are closed");
        assert_eq!(
            t.share.wait_online(Duration::from_secs(1)),
            ShareStatus::Fatal("stopped by the harness".into())
        );
        drop((t, server));
    }
}
