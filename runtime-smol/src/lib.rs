//! aether on smol: smol's sockets, timers and tasks lent to the one driver in
//! `aether_core::drive`, which sequences `serve` and `share` (and the core's
//! machines make every decision).
//!
//! Both functions start their own executor on background threads and return a
//! handle once the sockets are bound, so the CLI and the end-to-end tests
//! drive this crate and `aether-tokio` through the same blocking API.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod rt;
#[cfg(test)]
mod tests;

pub use aether_core::drive::ReportFn;
pub use aether_core::hub::ServerEvent;
pub use aether_core::options::{Report, ServeOptions, ShareOptions, ShareStatus};
pub use rt::{Smol, SmolListener, SmolRuntime, SmolStream, SmolTimer};

/// A running server; dropping it (or `stop`) closes every socket.
pub type Server = aether_core::drive::Server<SmolRuntime>;

/// A running client; dropping it (or `stop`) closes its connections.
pub type Share = aether_core::drive::Share<SmolRuntime>;

/// Starts `aether serve`; `log` receives the hub's events.
pub fn serve(opts: ServeOptions, log: fn(&ServerEvent)) -> std::io::Result<Server> {
    Server::start(opts, log)
}

/// Starts `aether share`; `report` receives its events and request lines.
pub fn share(opts: ShareOptions, report: ReportFn) -> std::io::Result<Share> {
    Share::start(opts, report)
}
