//! What most cases start with.

use std::time::Duration;

use aether_core::options::ServeOptions;
use aether_tests::{Env, Origin, Server, Tunnel, loopback};

/// A tunnel to a fresh origin through a fresh server (fields drop client first).
pub struct Setup {
    pub tunnel: Tunnel,
    pub server: Server,
    pub origin: Origin,
}

/// Default server options, one tunnel under a random name.
pub fn setup(env: &Env) -> Setup {
    setup_with(env, loopback())
}

/// `opts` for the server, one tunnel under a random name.
pub fn setup_with(env: &Env, opts: ServeOptions) -> Setup {
    let origin = Origin::start();
    let server = env.serve(opts);
    let tunnel = env.tunnel(&server, origin.port());
    Setup { tunnel, server, origin }
}

/// A short bound for things that should happen at once.
pub const SOON: Duration = Duration::from_secs(5);
