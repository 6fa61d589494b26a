//! aether on smol: placeholder while the adapter is written (returns an error from every entry point).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use aether_core::hub::ServerEvent;
pub use aether_core::options::{Report, ServeOptions, ShareOptions, ShareStatus};

/// Receives what a running `share` reports.
pub type ReportFn = Arc<dyn Fn(&Report) + Send + Sync>;

/// A running server.
pub struct Server;

impl Server {
    /// The public HTTP listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        unreachable!()
    }
    /// The tunnel listener's address.
    pub fn tunnel_addr(&self) -> SocketAddr {
        unreachable!()
    }
}

/// A running client.
pub struct Share;

impl Share {
    /// Waits until registered or fatal.
    pub fn wait_online(&self, _: Duration) -> ShareStatus {
        unreachable!()
    }
    /// Blocks until fatal.
    pub fn wait_fatal(&self) -> String {
        unreachable!()
    }
}

/// Starts `aether serve`.
pub fn serve(_: ServeOptions, _: fn(&ServerEvent)) -> std::io::Result<Server> {
    Err(std::io::Error::other("the smol runtime is not built yet"))
}

/// Starts `aether share`.
pub fn share(_: ShareOptions, _: ReportFn) -> std::io::Result<Share> {
    Err(std::io::Error::other("the smol runtime is not built yet"))
}
