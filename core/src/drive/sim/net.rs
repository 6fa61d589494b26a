//! The simulation's loopback network: listeners by port, and duplex streams made of two bounded
//! pipes. A write delivers at most the connection's chunk size and only into free room (so a full
//! peer pushes back); a reset fails both ends at once; dropping an end is a close (FIN), or a reset
//! if it left bytes unread, as TCP does. It does not model latency, loss or reordering.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;

use crate::drive::sync::lock;
use crate::drive::{Listener, Stream, Watch};

/// One direction of a connection.
#[derive(Debug)]
struct Pipe {
    buf: VecDeque<u8>,
    cap: usize,
    chunk: usize,
    /// The writer shut down (or dropped) its side.
    eof: bool,
    /// The connection was reset: reads and writes fail.
    reset: bool,
    /// The reading end is gone: writes fail.
    reader_gone: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    fn new(cap: usize, chunk: usize) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            buf: VecDeque::new(),
            cap: cap.max(1),
            chunk: chunk.max(1),
            eof: false,
            reset: false,
            reader_gone: false,
            reader: None,
            writer: None,
        }))
    }

    fn wake_all(&mut self) {
        self.reader.take().into_iter().chain(self.writer.take()).for_each(Waker::wake);
    }
}

/// What the network knows of one connection, for the properties' accounting.
#[derive(Debug)]
pub struct ConnRec {
    /// The port dialled.
    pub port: u16,
    /// The first bytes the accepting end wrote (a tunnel connection's verdict line).
    pub first_reply: Vec<u8>,
    /// The connection was reset (by injection, or by a close that left bytes unread).
    pub reset: bool,
    /// The accepting end closed while the dialling end was still open and nothing had failed.
    pub closed_by_acceptor: bool,
    /// Which ends are still open: dialler, acceptor.
    pub open: [bool; 2],
    up: Arc<Mutex<Pipe>>,
    down: Arc<Mutex<Pipe>>,
}

#[derive(Debug, Default)]
struct Accepts {
    queue: VecDeque<(SimStream, SocketAddr)>,
    waker: Option<Waker>,
}

/// Listeners and connections.
#[derive(Debug, Default)]
pub struct Net {
    listeners: HashMap<u16, Arc<Mutex<Accepts>>>,
    /// Every connection made, by id.
    pub conns: Vec<Arc<Mutex<ConnRec>>>,
    next_port: u16,
}

impl Net {
    /// Registers a listener on `port` (0: the next free one).
    pub fn bind(&mut self, port: u16) -> io::Result<SimListener> {
        let port = if port == 0 {
            self.next_port = self.next_port.max(20_000) + 1;
            self.next_port
        } else {
            port
        };
        if self.listeners.contains_key(&port) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        let accepts = Arc::new(Mutex::new(Accepts::default()));
        self.listeners.insert(port, accepts.clone());
        Ok(SimListener { port, accepts })
    }

    /// Dials `port` with pipes of `cap` bytes that deliver at most `chunk` bytes a write.
    pub fn connect(&mut self, port: u16, cap: usize, chunk: usize) -> io::Result<SimStream> {
        let accepts = self.listeners.get(&port).ok_or(io::ErrorKind::ConnectionRefused)?.clone();
        let (up, down) = (Pipe::new(cap, chunk), Pipe::new(cap, chunk));
        let rec = Arc::new(Mutex::new(ConnRec {
            port,
            first_reply: Vec::new(),
            reset: false,
            closed_by_acceptor: false,
            open: [true, true],
            up: up.clone(),
            down: down.clone(),
        }));
        self.conns.push(rec.clone());
        let dialler = SimStream { rx: down.clone(), tx: up.clone(), rec: rec.clone(), side: 0 };
        let acceptor = SimStream { rx: up, tx: down, rec, side: 1 };
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000 + (self.conns.len() % 20_000) as u16));
        let waker = {
            let mut a = lock(&accepts);
            a.queue.push_back((acceptor, peer));
            a.waker.take()
        };
        waker.into_iter().for_each(Waker::wake);
        Ok(dialler)
    }

    /// Forgets every listener and the streams queued on them.
    pub fn clear(&mut self) -> Vec<(SimStream, SocketAddr)> {
        self.listeners.drain().flat_map(|(_, a)| std::mem::take(&mut lock(&a).queue)).collect()
    }
}

/// Resets a connection: both ends' reads and writes fail from now on.
pub fn reset(rec: &Mutex<ConnRec>) {
    let (up, down) = {
        let mut r = lock(rec);
        r.reset = true;
        (r.up.clone(), r.down.clone())
    };
    for p in [up, down] {
        let mut p = lock(&p);
        p.reset = true;
        p.wake_all();
    }
}

/// A listener on the simulated network.
#[derive(Debug)]
pub struct SimListener {
    port: u16,
    accepts: Arc<Mutex<Accepts>>,
}

impl Listener for SimListener {
    type Stream = SimStream;

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)))
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(SimStream, SocketAddr)>> {
        let mut a = lock(&self.accepts);
        match a.queue.pop_front() {
            Some(s) => Poll::Ready(Ok(s)),
            None => {
                a.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// One end of a simulated connection.
#[derive(Debug)]
pub struct SimStream {
    rx: Arc<Mutex<Pipe>>,
    tx: Arc<Mutex<Pipe>>,
    rec: Arc<Mutex<ConnRec>>,
    /// 0: the dialler, 1: the acceptor.
    side: usize,
}

impl SimStream {
    /// The connection's record.
    pub fn rec(&self) -> &Arc<Mutex<ConnRec>> {
        &self.rec
    }

    /// Whether the other end has read everything this end wrote.
    pub fn sent_all_read(&self) -> bool {
        lock(&self.tx).buf.is_empty()
    }

    /// Ready once the other end is gone for reading (closed or reset).
    pub fn poll_peer_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut p = lock(&self.tx);
        if p.reader_gone || p.reset {
            return Poll::Ready(());
        }
        p.writer = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        let unread = {
            let mut rx = lock(&self.rx);
            rx.reader_gone = true;
            rx.writer.take().into_iter().for_each(Waker::wake);
            !rx.buf.is_empty()
        };
        {
            let mut tx = lock(&self.tx);
            tx.eof = true;
            tx.reset |= unread;
            tx.reader.take().into_iter().for_each(Waker::wake);
        }
        let mut r = lock(&self.rec);
        r.reset |= unread;
        if self.side == 1 && r.open[0] && !r.reset {
            r.closed_by_acceptor = true;
        }
        r.open[self.side] = false;
    }
}

impl Stream for SimStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        let mut p = lock(&self.rx);
        if p.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if p.buf.is_empty() {
            if p.eof {
                return Poll::Ready(Ok(0));
            }
            p.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = p.buf.len().min(buf.capacity() - buf.len()).max(1);
        let take = n.min(p.buf.len());
        buf.extend(p.buf.drain(..take));
        p.writer.take().into_iter().for_each(Waker::wake);
        Poll::Ready(Ok(n))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut p = lock(&self.tx);
        if p.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if p.reader_gone || p.eof {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = (p.cap - p.buf.len().min(p.cap)).min(p.chunk);
        if room == 0 {
            p.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        let mut wrote = Vec::new();
        for b in bufs {
            let take = b.len().min(room - n);
            p.buf.extend(&b[..take]);
            if self.side == 1 && wrote.len() < 64 {
                wrote.extend_from_slice(&b[..take.min(64)]);
            }
            n += take;
            if n == room {
                break;
            }
        }
        p.reader.take().into_iter().for_each(Waker::wake);
        drop(p);
        if !wrote.is_empty() {
            let mut r = lock(&self.rec);
            let room = 64usize.saturating_sub(r.first_reply.len());
            r.first_reply.extend_from_slice(&wrote[..room.min(wrote.len())]);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_watch(&mut self, cx: &mut Context<'_>) -> Poll<Watch> {
        let mut p = lock(&self.rx);
        match (p.reset, p.buf.is_empty(), p.eof) {
            (true, ..) => Poll::Ready(Watch::Failed),
            (_, false, _) => Poll::Ready(Watch::Data),
            (_, true, true) => Poll::Ready(Watch::Eof),
            _ => {
                p.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn poll_shutdown(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut p = lock(&self.tx);
        p.eof = true;
        p.reader.take().into_iter().for_each(Waker::wake);
        Poll::Ready(Ok(()))
    }
}
