//! A whole tunnel in one simulation: the real `drive` server and client, the script origin, the
//! visitors and a chaos task that resets tunnel connections, plus the accounting the properties
//! check (how requests ended, which connections the server closed). It models one client and one
//! tunnel; not domains, TLS or registration failures.

use std::future::poll_fn;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::net::{self, ConnRec};
use super::script::{self, End, Ends, Visit};
use super::{Shape, SimRt};
use crate::drive::handle::StatusCell;
use crate::drive::sync::lock;
use crate::drive::{Listener, Rt, client, server};
use crate::handshake::Verdict;
use crate::limits::Limits;
use crate::options::{Report, ServeOptions, ShareOptions};
use crate::supervisor::ClientEvent;

/// Most polls of one run before it counts as a livelock.
pub const MAX_POLLS: usize = 2_000_000;

/// How long, in virtual time, the tunnel may take to come up or back.
pub const SETTLE: Duration = Duration::from_secs(120);

/// What a world is built from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Task order, entropy and connection shapes.
    pub seed: u64,
    /// Connection shapes.
    pub shape: Shape,
    /// The client's target number of tunnel connections.
    pub conns: usize,
    /// The server's limits.
    pub limits: Limits,
}

/// A running simulated tunnel.
pub struct World {
    /// The runtime everything runs on.
    pub rt: SimRt,
    /// The server's HTTP port.
    pub http: u16,
    /// The server's tunnel port.
    pub tunnel: u16,
    /// The tunnel's name, once online.
    pub id: Arc<Mutex<Option<String>>>,
    /// How the visitors' requests ended.
    pub ends: Ends,
    /// The client's target.
    pub conns: usize,
    /// The chaos task is through.
    pub chaos_done: Arc<AtomicBool>,
}

impl World {
    /// Starts origin, server and client; `None` if the tunnel did not come up within [`SETTLE`].
    pub fn start(cfg: &Config) -> Option<Self> {
        let rt = SimRt::new(cfg.seed, cfg.shape);
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut origin = rt.bind((local, 0).into()).ok()?;
        let origin_port = origin.local_addr().ok()?.port();
        let accept = rt.clone();
        rt.spawn(async move {
            while let Ok((s, _)) = poll_fn(|cx| origin.poll_accept(cx)).await {
                accept.spawn(script::origin_conn(s));
            }
        });
        let opts = ServeOptions {
            address: local,
            port: 0,
            tunnel_port: 0,
            limits: cfg.limits.clone(),
            ..Default::default()
        };
        let (http, tunnel) = server::start(rt.clone(), opts, |_| {}).ok()?;
        let mut share = ShareOptions::new(&format!("127.0.0.1:{}", http.port()), origin_port);
        share.max_conns = Some(cfg.conns);
        let id = Arc::new(Mutex::new(None));
        let seen = id.clone();
        let report = Arc::new(move |r: &Report| {
            if let Report::Client(ClientEvent::Online { id, .. }) = r {
                *lock(&seen) = Some(id.to_string());
            }
        });
        rt.spawn(client::run(rt.clone(), share, report, Arc::new(StatusCell::new())));
        let world = Self {
            rt,
            http: http.port(),
            tunnel: tunnel.port(),
            id,
            ends: Ends::default(),
            conns: cfg.conns,
            chaos_done: Arc::default(),
        };
        world.settle().then_some(world)
    }

    /// Runs until the tunnel is online with its target number of live connections, and the server
    /// has let go of every reset one (until then it may still grant one).
    pub fn settle(&self) -> bool {
        let limit = self.rt.now() + SETTLE;
        self.rt.run_until(limit, MAX_POLLS, || {
            lock(&self.id).is_some() && self.live_tunnels() == self.conns && self.reset_held() == 0
        })
    }

    /// Reset tunnel connections the server still holds.
    fn reset_held(&self) -> usize {
        let recs = self.rt.net().conns.clone();
        recs.iter()
            .filter(|r| matches!(*lock(r), ConnRec { port, reset: true, open: [_, true], .. } if port == self.tunnel))
            .count()
    }

    fn tunnel_recs(&self) -> Vec<Arc<Mutex<ConnRec>>> {
        let accepted = Verdict::Accepted.line();
        let recs = self.rt.net().conns.clone();
        recs.into_iter()
            .filter(|r| {
                let r = lock(r);
                r.port == self.tunnel && r.first_reply.starts_with(accepted)
            })
            .collect()
    }

    /// Accepted tunnel connections open at both ends and not reset.
    pub fn live_tunnels(&self) -> usize {
        self.tunnel_recs()
            .iter()
            .filter(|r| matches!(*lock(r), ConnRec { open: [true, true], reset: false, .. }))
            .count()
    }

    /// Accepted tunnel connections the server closed while they were healthy (open and never reset).
    pub fn healthy_closed_by_server(&self) -> usize {
        self.tunnel_recs().iter().filter(|r| lock(r).closed_by_acceptor).count()
    }

    /// Tunnel connections reset (by the chaos task, or closed with bytes unread).
    pub fn tunnel_resets(&self) -> usize {
        let recs = self.rt.net().conns.clone();
        recs.iter()
            .filter(|r| matches!(*lock(r), ConnRec { port, reset: true, .. } if port == self.tunnel))
            .count()
    }

    /// Visitor connections the server still holds open.
    pub fn open_visitors(&self) -> usize {
        let recs = self.rt.net().conns.clone();
        recs.iter()
            .filter(|r| matches!(*lock(r), ConnRec { port, open: [_, true], .. } if port == self.http))
            .count()
    }

    /// Spawns one visitor per script, numbered from `first`.
    pub fn visit(&self, first: usize, visits: &[Visit]) {
        let id = lock(&self.id).clone().unwrap_or_default();
        for (k, v) in visits.iter().enumerate() {
            let task = script::visit(
                self.rt.clone(),
                self.http,
                id.clone(),
                first + k,
                v.clone(),
                self.ends.clone(),
            );
            self.rt.spawn(task);
        }
    }

    /// Spawns a task that resets a live tunnel connection after each of `gaps` (its own polls, so
    /// the resets land between other tasks' steps); `chaos_done` once it is through.
    pub fn chaos(&self, gaps: Vec<usize>) {
        let (rt, port, done) = (self.rt.clone(), self.tunnel, self.chaos_done.clone());
        self.rt.spawn(async move {
            for gap in gaps {
                for _ in 0..gap {
                    script::yield_now().await;
                }
                let live: Vec<_> = rt
                    .net()
                    .conns
                    .iter()
                    .filter(|r| matches!(*lock(r), ConnRec { port: p, open: [true, true], reset: false, .. } if p == port))
                    .cloned()
                    .collect();
                if !live.is_empty() {
                    net::reset(&live[rt.below(live.len() as u64) as usize]);
                }
            }
            done.store(true, Ordering::SeqCst);
        });
    }

    /// Runs until `n` request ends are recorded, or `limit` of virtual time passed; whether they were.
    pub fn run_ends(&self, n: usize, limit: Duration) -> bool {
        let until = self.rt.now() + limit;
        self.rt.run_until(until, MAX_POLLS, || lock(&self.ends).len() >= n)
    }

    /// The recorded ends of visitor `v`.
    pub fn ends_of(&self, v: usize) -> Vec<End> {
        lock(&self.ends).iter().filter(|(w, ..)| *w == v).map(|(.., e)| *e).collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.rt.shutdown();
    }
}
