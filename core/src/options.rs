//! What a user asks `aether serve` and `aether share` for: the options the CLI
//! parses and both runtimes take, and the reports they give back.
//!
//! Plain data with SPEC §2's defaults; it turns into the machines' configs
//! ([`ServerConfig`], [`FrontConfig`], [`ClientConfig`]) here so the two
//! runtimes cannot drift apart. It does not parse command lines.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::front::FrontConfig;
use crate::http::rewrite::Proto;
use crate::hub::{MemStats, ServerConfig};
use crate::id::TunnelId;
use crate::limits::Limits;
use crate::route::RouteConfig;
use crate::supervisor::{ClientConfig, ClientEvent, HandshakeMode};

/// `aether serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address both listeners bind.
    pub address: IpAddr,
    /// Public HTTP port (0: any free port).
    pub port: u16,
    /// Tunnel port (0: any free port; the reply tells clients the bound one).
    pub tunnel_port: u16,
    /// Domain mode: tunnels at `<id>.<domain>`.
    pub domain: Option<String>,
    /// Public URLs are https (TLS terminated in front).
    pub secure: bool,
    /// Accept the seed's bare `<id>` handshake.
    pub legacy_handshake: bool,
    /// Where `GET /` redirects.
    pub landing: String,
    /// Every bound and timeout (`max_conn_per_tunnel` is `--max-conn`).
    pub limits: Limits,
    /// Reads the process's memory figures for `/api/status` (the binary owns the allocator).
    pub mem: fn() -> MemStats,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 8080,
            tunnel_port: 62322,
            domain: None,
            secure: false,
            legacy_handshake: false,
            landing: "https://github.com/aether-tunnel/aether".into(),
            limits: Limits::default(),
            mem: MemStats::default,
        }
    }
}

impl ServeOptions {
    /// The hub's configuration, once the tunnel port is bound.
    pub fn server_config(&self, tunnel_port: u16) -> ServerConfig {
        ServerConfig {
            limits: self.limits.clone(),
            domain: self.domain.clone(),
            secure: self.secure,
            tunnel_port,
            legacy_handshake: self.legacy_handshake,
        }
    }

    /// The front door's configuration.
    pub fn front_config(&self) -> FrontConfig {
        FrontConfig {
            route: RouteConfig { domain: self.domain.clone() },
            proto: if self.secure { Proto::Https } else { Proto::Http },
            landing: self.landing.clone(),
            mem: self.mem,
        }
    }
}

/// `aether share`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareOptions {
    /// The server's registration address, `host:port` (an `http://` prefix is accepted and dropped).
    pub server: String,
    /// The origin's host.
    pub local_host: String,
    /// The origin's port.
    pub local_port: u16,
    /// The tunnel name to ask for.
    pub subdomain: Option<TunnelId>,
    /// The server is the seed's: bare `<id>` hello, no verdict.
    pub legacy: bool,
    /// Keep at most this many tunnel connections.
    pub max_conns: Option<usize>,
    /// Time allowed to connect to the origin.
    pub origin_timeout: Duration,
}

impl ShareOptions {
    /// Options for sharing `local_port` through `server`, other fields at their defaults.
    pub fn new(server: &str, local_port: u16) -> Self {
        Self {
            server: server.to_owned(),
            local_host: "127.0.0.1".into(),
            local_port,
            subdomain: None,
            legacy: false,
            max_conns: None,
            origin_timeout: Duration::from_secs(5),
        }
    }

    /// `host:port` of the server, without a scheme or path.
    pub fn server_authority(&self) -> &str {
        let s = self.server.trim();
        let s = s.strip_prefix("http://").unwrap_or(s);
        s.split('/').next().unwrap_or(s)
    }

    /// The host part of the server's authority (tunnel connections go to it, on the reply's port).
    pub fn server_host(&self) -> &str {
        let auth = self.server_authority();
        if let Some(v6) = auth.strip_prefix('[') {
            return v6.split(']').next().unwrap_or(v6);
        }
        auth.rsplit_once(':').map_or(auth, |(h, _)| h)
    }

    /// The origin's `host:port`.
    pub fn origin(&self) -> String {
        match self.local_host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", self.local_port),
            _ => format!("{}:{}", self.local_host, self.local_port),
        }
    }

    /// The supervisor's configuration, seeded by the adapter.
    pub fn client_config(&self, seed: u64) -> ClientConfig {
        ClientConfig {
            name: self.subdomain.clone(),
            max_conns: self.max_conns,
            handshake: if self.legacy { HandshakeMode::Legacy } else { HandshakeMode::Auto },
            seed,
            ..ClientConfig::default()
        }
    }
}

/// Threads for one `serve` or `share` runtime on a machine with `cores`: half of them, at least one.
///
/// Measured on 2 cores (`bench/run.sh`): one thread beat two by about 20% in requests/s and CPU per
/// request, since the other processes of a tunnel (origin, client or server) need the other core
/// and cross-thread wake-ups cost more than they bring.
pub fn worker_threads(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// One proxied request, as `--print-requests` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// The method.
    pub method: String,
    /// The target as the origin saw it.
    pub path: String,
    /// The response status (502 when the origin was down, 0 when none came).
    pub status: u16,
    /// From the request head's arrival to the response's end.
    pub duration: Duration,
}

/// What a running `share` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// From the supervisor (online, reconnecting, fatal ...).
    Client(ClientEvent),
    /// A request went through.
    Request(RequestLog),
}

/// Where a running `share` stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareStatus {
    /// Not registered yet.
    Starting,
    /// Registered; the public URL.
    Online(String),
    /// Gave up; what the user must fix.
    Fatal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_address_forms() {
        for (given, auth, host) in [
            ("http://example.com:8080/", "example.com:8080", "example.com"),
            ("127.0.0.1:9000", "127.0.0.1:9000", "127.0.0.1"),
            ("[::1]:80", "[::1]:80", "::1"),
            ("tunnel.example", "tunnel.example", "tunnel.example"),
        ] {
            let o = ShareOptions::new(given, 3000);
            assert_eq!((o.server_authority(), o.server_host()), (auth, host), "{given}");
        }
        let mut o = ShareOptions::new("x:1", 3000);
        assert_eq!(o.origin(), "127.0.0.1:3000");
        o.local_host = "::1".into();
        assert_eq!(o.origin(), "[::1]:3000");
    }
}
