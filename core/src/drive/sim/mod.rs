//! A deterministic simulation runtime for the driver (tests and the `drive_ops` fuzz target): one
//! thread, a virtual clock, and the in-memory network of [`net`].
//!
//! [`SimRt::spawn`] queues a task; [`SimRt::run_until`] polls ready tasks in an order drawn from
//! the seed and, only when none is ready, moves the clock to the earliest armed timer, so a whole
//! server, client and origin run in one thread and every run of a seed is the same run. Time is
//! exact: a deadline fires at its instant, never before or after. It does not model threads,
//! preemption or a clock that drifts.

pub mod net;
pub mod ops;
pub mod script;
pub mod world;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod timers;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use self::net::{Net, SimListener, SimStream};
use super::sync::lock;
use super::{Rt, Timer};
use crate::entropy::Rng;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Tasks woken and not yet polled.
#[derive(Debug, Default)]
struct Ready {
    ids: Vec<usize>,
    queued: Vec<bool>,
}

struct TaskWaker {
    id: usize,
    ready: Arc<Mutex<Ready>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut r = lock(&self.ready);
        if r.queued.len() <= self.id {
            r.queued.resize(self.id + 1, false);
        }
        if !r.queued[self.id] {
            r.queued[self.id] = true;
            r.ids.push(self.id);
        }
    }
}

#[derive(Debug)]
struct Clock {
    start: Instant,
    now: Instant,
    /// Armed timers by id: when, and whom to wake.
    armed: BTreeMap<u64, (Instant, Waker)>,
    next_timer: u64,
}

/// How the network shapes each connection.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Largest pipe capacity (each connection draws 1..=this).
    pub max_cap: usize,
    /// Largest write (each connection draws 1..=this).
    pub max_chunk: usize,
}

struct Inner {
    clock: Mutex<Clock>,
    ready: Arc<Mutex<Ready>>,
    /// Spawned and not yet given an id.
    incoming: Mutex<Vec<Task>>,
    tasks: Mutex<Vec<Option<Task>>>,
    rng: Mutex<Rng>,
    net: Mutex<Net>,
    shape: Shape,
}

/// The simulation runtime: a cheap handle, shared by every task it runs.
#[derive(Clone)]
pub struct SimRt(Arc<Inner>);

impl SimRt {
    /// A runtime whose task order, entropy and connection shapes all follow `seed`.
    pub fn new(seed: u64, shape: Shape) -> Self {
        Self(Arc::new(Inner {
            clock: Mutex::new({
                let now = Instant::now();
                Clock { start: now, now, armed: BTreeMap::new(), next_timer: 0 }
            }),
            ready: Arc::default(),
            incoming: Mutex::default(),
            tasks: Mutex::default(),
            rng: Mutex::new(Rng::new(seed)),
            net: Mutex::default(),
            shape,
        }))
    }

    /// A number in `0..n` from the seed.
    pub fn below(&self, n: u64) -> u64 {
        lock(&self.0.rng).below(n.max(1))
    }

    /// The network, for the properties' accounting and fault injection.
    pub fn net(&self) -> std::sync::MutexGuard<'_, Net> {
        lock(&self.0.net)
    }

    /// Dials `port` on the simulated network.
    pub fn dial(&self, port: u16) -> io::Result<SimStream> {
        let cap = 1 + self.below(self.0.shape.max_cap as u64) as usize;
        let chunk = 1 + self.below(self.0.shape.max_chunk as u64) as usize;
        self.net().connect(port, cap, chunk)
    }

    /// Runs tasks until `done` holds (true) or the clock would pass `limit`, or nothing is left to
    /// run (false). Panics on a livelock: `max_polls` polls without `done`.
    pub fn run_until(&self, limit: Instant, max_polls: usize, mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..max_polls {
            self.absorb();
            if done() {
                return true;
            }
            let next = {
                let mut r = lock(&self.0.ready);
                if r.ids.is_empty() {
                    None
                } else {
                    let i = lock(&self.0.rng).below(r.ids.len() as u64) as usize;
                    let id = r.ids.swap_remove(i);
                    r.queued[id] = false;
                    Some(id)
                }
            };
            match next {
                Some(id) => self.poll_task(id),
                None => {
                    let at = lock(&self.0.clock).armed.values().map(|(t, _)| *t).min();
                    match at {
                        Some(at) if at <= limit => self.advance_to(at),
                        _ => return false,
                    }
                }
            }
        }
        panic!("livelock: {max_polls} polls and still not done at {:?}", self.elapsed());
    }

    /// Virtual time since the runtime started.
    pub fn elapsed(&self) -> Duration {
        let c = lock(&self.0.clock);
        c.now.saturating_duration_since(c.start)
    }

    /// Runs for `d` of virtual time (or until nothing is left to run).
    pub fn run_for(&self, d: Duration, max_polls: usize) {
        let until = self.now() + d;
        self.run_until(until, max_polls, || false);
        self.advance_to(until);
    }

    fn absorb(&self) {
        let new = std::mem::take(&mut *lock(&self.0.incoming));
        if new.is_empty() {
            return;
        }
        let mut tasks = lock(&self.0.tasks);
        for t in new {
            let id = tasks.len();
            tasks.push(Some(t));
            Waker::from(Arc::new(TaskWaker { id, ready: self.0.ready.clone() })).wake();
        }
    }

    fn poll_task(&self, id: usize) {
        let Some(mut task) = lock(&self.0.tasks).get_mut(id).and_then(Option::take) else { return };
        let waker = Waker::from(Arc::new(TaskWaker { id, ready: self.0.ready.clone() }));
        if task.as_mut().poll(&mut Context::from_waker(&waker)).is_pending() {
            lock(&self.0.tasks)[id] = Some(task);
        }
    }

    fn advance_to(&self, at: Instant) {
        let due: Vec<Waker> = {
            let mut c = lock(&self.0.clock);
            c.now = c.now.max(at);
            let now = c.now;
            let ids: Vec<u64> = c.armed.iter().filter(|(_, (t, _))| *t <= now).map(|(id, _)| *id).collect();
            ids.iter().filter_map(|id| c.armed.remove(id)).map(|(_, w)| w).collect()
        };
        due.into_iter().for_each(Waker::wake);
    }

    /// Drops every task, listener and timer, so nothing outlives the run (no cycles through tasks).
    pub fn shutdown(&self) {
        loop {
            let tasks = std::mem::take(&mut *lock(&self.0.tasks));
            let incoming = std::mem::take(&mut *lock(&self.0.incoming));
            let queued = self.net().clear();
            if tasks.is_empty() && incoming.is_empty() && queued.is_empty() {
                break;
            }
            drop((tasks, incoming, queued));
        }
        lock(&self.0.clock).armed.clear();
        *lock(&self.0.ready) = Ready::default();
    }
}

/// A timer on the virtual clock.
pub struct SimTimer {
    rt: SimRt,
    id: u64,
    at: Instant,
}

impl Timer for SimTimer {
    fn reset(&mut self, at: Instant) {
        self.at = at;
        lock(&self.rt.0.clock).armed.remove(&self.id);
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut c = lock(&self.rt.0.clock);
        if c.now >= self.at {
            c.armed.remove(&self.id);
            return Poll::Ready(());
        }
        c.armed.insert(self.id, (self.at, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for SimTimer {
    fn drop(&mut self) {
        lock(&self.rt.0.clock).armed.remove(&self.id);
    }
}

impl Rt for SimRt {
    type Stream = SimStream;
    type Listener = SimListener;
    type Timer = SimTimer;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        lock(&self.0.incoming).push(Box::pin(task));
    }

    fn timer(&self, at: Instant) -> SimTimer {
        let mut c = lock(&self.0.clock);
        c.next_timer += 1;
        SimTimer { rt: self.clone(), id: c.next_timer, at }
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<SimListener> {
        self.net().bind(addr.port())
    }

    fn connect(&self, addr: String) -> impl Future<Output = io::Result<SimStream>> + Send + 'static {
        let port = addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
        std::future::ready(match port {
            Some(port) => self.dial(port),
            None => Err(io::ErrorKind::InvalidInput.into()),
        })
    }

    fn entropy(&self) -> [u8; 32] {
        let mut rng = lock(&self.0.rng);
        let mut out = [0; 32];
        out.chunks_mut(8).for_each(|c| c.copy_from_slice(&rng.next_u64().to_le_bytes()));
        out
    }

    fn now(&self) -> Instant {
        lock(&self.0.clock).now
    }
}
