//! aether on smol: `serve` and `share` as thin loops that move bytes between
//! sockets and the `aether-core` machines, which make every decision.
//!
//! Both functions start their own executor on background threads and return a
//! handle once the sockets are bound, so the CLI and the end-to-end tests
//! drive this crate and `aether-tokio` through the same blocking API.
//!
//! Tasks reach the executor only through a weak `Spawner`, so the handle
//! holds its one strong reference: stopping joins the threads, then drops the
//! executor, which cancels every task and so closes every socket.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod io;
mod rt;
mod server;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

pub use aether_core::hub::ServerEvent;
pub use aether_core::options::{Report, ServeOptions, ShareOptions, ShareStatus};
pub use rt::{Smol, SmolListener, SmolRuntime, SmolStream, SmolTimer};
use smol::channel::Sender;
use smol::{Executor, Task};

/// Receives what a running `share` reports.
pub type ReportFn = Arc<dyn Fn(&Report) + Send + Sync>;

/// An executor on its own threads; [`shutdown`](Runtime::shutdown) ends it and every task on it.
struct Runtime {
    executor: Option<Arc<Executor<'static>>>,
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Runtime {
    /// Starts the executor's threads.
    fn start() -> std::io::Result<Self> {
        let executor = Arc::new(Executor::new());
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let count =
            aether_core::options::worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get()));
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let (ex, stopped) = (executor.clone(), stopped.clone());
            let thread = std::thread::Builder::new().name(format!("aether-smol-{i}")).spawn(move || {
                // A panicking task unwinds out of `run`; keep serving the other tasks.
                while catch_unwind(AssertUnwindSafe(|| {
                    smol::block_on(ex.run(async {
                        let _ = stopped.recv().await;
                    }))
                }))
                .is_err()
                {}
            })?;
            threads.push(thread);
        }
        Ok(Self { executor: Some(executor), stop: Some(stop), threads })
    }

    /// A handle for spawning onto this runtime.
    fn spawner(&self) -> Spawner {
        Spawner(self.executor.as_ref().map_or_else(Weak::new, Arc::downgrade))
    }

    /// Stops the threads and drops every task; idempotent.
    fn shutdown(&mut self) {
        // Closing the channel ends every thread's run loop.
        drop(self.stop.take());
        let me = std::thread::current().id();
        for thread in self.threads.drain(..) {
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
        // The last strong reference: dropping the executor drops every task, and their sockets.
        drop(self.executor.take());
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Spawns onto a runtime's executor without keeping it alive.
#[derive(Clone)]
pub(crate) struct Spawner(Weak<Executor<'static>>);

impl Spawner {
    /// Spawns `fut`; dropping the returned task cancels it. `None` once the runtime is stopped
    /// (`fut` is then dropped, as its task would have been).
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Option<Task<T>> {
        self.0.upgrade().map(|ex| ex.spawn(fut))
    }

    /// Spawns `fut` to run until it ends or the runtime stops.
    pub(crate) fn detach(&self, fut: impl Future<Output = ()> + Send + 'static) {
        if let Some(task) = self.spawn(fut) {
            task.detach();
        }
    }
}

/// A running server; dropping it (or [`stop`](Server::stop)) closes every socket.
pub struct Server {
    http: SocketAddr,
    tunnel: SocketAddr,
    rt: Runtime,
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
        self.rt.shutdown();
    }
}

/// Starts `aether serve`; `log` receives the hub's events.
pub fn serve(opts: ServeOptions, log: fn(&ServerEvent)) -> std::io::Result<Server> {
    let rt = Runtime::start()?;
    let (http, tunnel, _) = smol::block_on(server::start(opts, log, rt.spawner()))?;
    Ok(Server { http, tunnel, rt })
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
    rt: Runtime,
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
        self.rt.shutdown();
    }
}

/// Starts `aether share`; `report` receives its events and request lines.
pub fn share(opts: ShareOptions, report: ReportFn) -> std::io::Result<Share> {
    let rt = Runtime::start()?;
    let status = Arc::new(StatusCell { status: Mutex::new(ShareStatus::Starting), changed: Condvar::new() });
    let spawner = rt.spawner();
    spawner.detach(client::run(opts, report, status.clone(), spawner.clone()));
    Ok(Share { status, rt })
}

/// Random bytes from the OS for tokens, ids and jitter seeds.
pub(crate) fn entropy() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    // Without OS entropy, tokens would be guessable: better to stop than to serve.
    getrandom::fill(&mut bytes).expect("the OS entropy source failed");
    bytes
}
