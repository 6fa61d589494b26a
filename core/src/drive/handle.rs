//! The blocking handles a runtime crate hands out: a running [`Server`] and a running [`Share`],
//! each owning its [`Runtime`]'s threads, so the CLI and the end-to-end tests drive every runtime
//! through the same API. Dropping a handle (or `stop`) shuts its runtime down, which closes every
//! socket.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::sync::lock;
use super::{Rt, Runtime, client, server};
use crate::hub::ServerEvent;
use crate::options::{Report, ServeOptions, ShareOptions, ShareStatus, worker_threads};

/// Receives what a running `share` reports.
pub type ReportFn = Arc<dyn Fn(&Report) + Send + Sync>;

/// Worker threads for one runtime on this machine.
fn threads() -> usize {
    worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A running server; dropping it (or [`stop`](Server::stop)) closes every socket.
pub struct Server<RT: Runtime> {
    http: SocketAddr,
    tunnel: SocketAddr,
    rt: RT,
}

impl<RT: Runtime> Server<RT> {
    /// Starts `aether serve` on a new runtime once both listeners are bound; `log` receives the
    /// hub's events.
    pub fn start(opts: ServeOptions, log: fn(&ServerEvent)) -> io::Result<Self> {
        let mut rt = RT::start(threads())?;
        match server::start(rt.rt(), opts, log) {
            Ok((http, tunnel)) => Ok(Self { http, tunnel, rt }),
            Err(e) => {
                rt.shutdown();
                Err(e)
            }
        }
    }

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
        self.rt.shutdown();
    }
}

impl<RT: Runtime> Drop for Server<RT> {
    fn drop(&mut self) {
        self.rt.shutdown();
    }
}

/// The shared status of a running `share`, waited on from other threads.
pub(crate) struct StatusCell {
    status: Mutex<ShareStatus>,
    changed: Condvar,
}

impl StatusCell {
    /// A status that starts as `Starting`.
    pub(crate) fn new() -> Self {
        Self { status: Mutex::new(ShareStatus::Starting), changed: Condvar::new() }
    }

    pub(crate) fn set(&self, status: ShareStatus) {
        *lock(&self.status) = status;
        self.changed.notify_all();
    }

    fn wait_until(&self, timeout: Option<Duration>, done: impl Fn(&ShareStatus) -> bool) -> ShareStatus {
        let guard = lock(&self.status);
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
pub struct Share<RT: Runtime> {
    status: Arc<StatusCell>,
    rt: RT,
}

impl<RT: Runtime> Share<RT> {
    /// Starts `aether share` on a new runtime; `report` receives its events and request lines.
    pub fn start(opts: ShareOptions, report: ReportFn) -> io::Result<Self> {
        let rt = RT::start(threads())?;
        let status = Arc::new(StatusCell::new());
        let handle = rt.rt();
        handle.spawn(client::run(handle.clone(), opts, report, status.clone()));
        Ok(Self { status, rt })
    }

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
        self.rt.shutdown();
    }
}

impl<RT: Runtime> Drop for Share<RT> {
    fn drop(&mut self) {
        self.rt.shutdown();
    }
}
