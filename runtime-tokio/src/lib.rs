//! aether on tokio: `serve` and `share` as thin loops that move bytes between
//! sockets and the `aether-core` machines, which make every decision.
//!
//! Both functions start their own runtime on background threads and return a
//! handle once the sockets are bound, so the CLI and the end-to-end tests
//! drive this crate and `aether-smol` through the same blocking API.

mod client;
mod io;
mod server;

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub use aether_core::hub::ServerEvent;
pub use aether_core::options::{Report, ServeOptions, ShareOptions, ShareStatus};

/// Receives what a running `share` reports.
pub type ReportFn = Arc<dyn Fn(&Report) + Send + Sync>;

/// A running server; dropping it (or [`stop`](Server::stop)) closes every socket.
pub struct Server {
    http: SocketAddr,
    tunnel: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// The public HTTP listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The tunnel listener's address.
    pub fn tunnel_addr(&self) -> SocketAddr {
        self.tunnel
    }

    /// Blocks the calling thread for as long as the server runs.
    pub fn wait(&self) {
        loop {
            std::thread::park();
        }
    }

    /// Stops the server: listeners and connections close.
    pub fn stop(mut self) {
        shutdown(&mut self.rt);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        shutdown(&mut self.rt);
    }
}

fn shutdown(rt: &mut Option<tokio::runtime::Runtime>) {
    if let Some(rt) = rt.take() {
        rt.shutdown_timeout(Duration::from_secs(1));
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let threads =
        aether_core::options::worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get()));
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
}

/// Starts `aether serve`; `log` receives the hub's events.
pub fn serve(opts: ServeOptions, log: fn(&ServerEvent)) -> std::io::Result<Server> {
    let rt = runtime()?;
    let (http, tunnel, _) = rt.block_on(server::start(opts, log))?;
    Ok(Server { http, tunnel, rt: Some(rt) })
}

/// The shared status of a running `share`, waited on from other threads.
pub(crate) struct StatusCell {
    status: Mutex<ShareStatus>,
    changed: Condvar,
}

impl StatusCell {
    fn set(&self, status: ShareStatus) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
        self.changed.notify_all();
    }

    fn wait_until(&self, timeout: Option<Duration>, done: impl Fn(&ShareStatus) -> bool) -> ShareStatus {
        let guard = self.status.lock().unwrap_or_else(|e| e.into_inner());
        match timeout {
            Some(t) => match self.changed.wait_timeout_while(guard, t, |s| !done(s)) {
                Ok((g, _)) => g.clone(),
                Err(e) => e.into_inner().0.clone(),
            },
            None => self.changed.wait_while(guard, |s| !done(s)).unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// A running client; dropping it (or [`stop`](Share::stop)) closes its connections.
pub struct Share {
    status: Arc<StatusCell>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Share {
    /// Waits until the tunnel is registered (its URL) or the client gave up (its message).
    pub fn wait_online(&self, timeout: Duration) -> ShareStatus {
        self.status.wait_until(Some(timeout), |s| !matches!(s, ShareStatus::Starting))
    }

    /// Blocks until the client gives up; returns why.
    pub fn wait_fatal(&self) -> String {
        match self.status.wait_until(None, |s| matches!(s, ShareStatus::Fatal(_))) {
            ShareStatus::Fatal(why) => why,
            other => format!("{other:?}"),
        }
    }

    /// Stops the client.
    pub fn stop(mut self) {
        shutdown(&mut self.rt);
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        shutdown(&mut self.rt);
    }
}

/// Starts `aether share`; `report` receives its events and request lines.
pub fn share(opts: ShareOptions, report: ReportFn) -> std::io::Result<Share> {
    let rt = runtime()?;
    let status = Arc::new(StatusCell { status: Mutex::new(ShareStatus::Starting), changed: Condvar::new() });
    rt.spawn(client::run(opts, report, status.clone()));
    Ok(Share { status, rt: Some(rt) })
}

/// Random bytes from the OS for tokens, ids and jitter seeds.
pub(crate) fn entropy() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    // Without OS entropy, tokens would be guessable: better to stop than to serve.
    getrandom::fill(&mut bytes).expect("the OS entropy source failed");
    bytes
}
