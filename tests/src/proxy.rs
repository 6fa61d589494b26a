//! A loopback TCP forwarder the harness owns, so a case can take a service away
//! and bring another one back behind the same address without any port number
//! being bound twice (a freed ephemeral port can be taken by a parallel test).
//!
//! Its port is held from creation to drop. It starts either forwarding to a
//! target or *closed*: bound but not listening, so the kernel refuses
//! connections exactly as for a port nobody listens on. Once listening it can
//! be switched to another target or set to *refuse* (each new connection is
//! closed at once). Switching or refusing cuts every connection made so far.
//! It forwards bytes both ways and passes a half-close on; it does not look at
//! or change the bytes, and it is loopback only. It counts the connections it
//! accepts, so a case can tell how often a client dialled.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// How long the proxy waits to connect to its target before closing the visitor.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards it to this address.
    Forward(SocketAddr),
    /// Closes it at once.
    Refuse,
    /// The proxy is dropped: the accept loop ends.
    Stopped,
}

/// One forwarded connection: both sockets, to cut it from outside its threads.
struct Link {
    id: usize,
    down: TcpStream,
    up: TcpStream,
}

/// What the accept loop and the handle share.
struct Shared {
    mode: Mutex<State>,
    next_id: AtomicUsize,
    /// Connections accepted, whatever became of them.
    accepted: AtomicUsize,
}

struct State {
    mode: Mode,
    /// Bumped on every switch, so a dial that raced a switch is dropped.
    generation: u64,
    links: Vec<Link>,
}

/// Not yet listening: the bound socket, kept so the port stays ours.
enum Listener {
    Closed(Socket),
    Open,
}

/// A running proxy on `127.0.0.1:<ephemeral>`; dropping it closes its port and every connection.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listener: Mutex<Listener>,
}

impl Proxy {
    /// A proxy whose port is bound but not listening: connections to it are refused until [`forward`](Proxy::forward).
    pub fn closed() -> Proxy {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
        // No SO_REUSEADDR: nobody else may bind this port while we hold it.
        socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into()).expect("bind the proxy port");
        let addr = socket.local_addr().expect("proxy address").as_socket().expect("an IP address");
        let state = State { mode: Mode::Refuse, generation: 0, links: Vec::new() };
        Proxy {
            addr,
            shared: Arc::new(Shared {
                mode: Mutex::new(state),
                next_id: AtomicUsize::new(0),
                accepted: AtomicUsize::new(0),
            }),
            listener: Mutex::new(Listener::Closed(socket)),
        }
    }

    /// A proxy listening and forwarding to `target`.
    pub fn to(target: SocketAddr) -> Proxy {
        let p = Proxy::closed();
        p.forward(target);
        p
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, new connections go to `target`; earlier ones are cut. Starts listening if closed.
    pub fn forward(&self, target: SocketAddr) {
        self.switch(Mode::Forward(target));
        self.open();
    }

    /// From now on, new connections are closed at once; earlier ones are cut. Starts listening if closed.
    pub fn refuse(&self) {
        self.switch(Mode::Refuse);
        self.open();
    }

    /// Forwarded connections still open (both directions not yet ended).
    pub fn links(&self) -> usize {
        lock(&self.shared).links.len()
    }

    /// Connections accepted since the proxy started listening (forwarded, refused or cut alike).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    fn switch(&self, mode: Mode) {
        let mut st = lock(&self.shared);
        st.mode = mode;
        st.generation += 1;
        for link in st.links.drain(..) {
            let _ = link.down.shutdown(Shutdown::Both);
            let _ = link.up.shutdown(Shutdown::Both);
        }
    }

    /// Starts listening (once) and the accept loop.
    fn open(&self) {
        let mut l = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        let Listener::Closed(socket) = std::mem::replace(&mut *l, Listener::Open) else { return };
        socket.listen(128).expect("listen on the proxy port");
        let listener: TcpListener = socket.into();
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name(format!("proxy-{}", self.addr.port()))
            .spawn(move || accept_loop(listener, shared))
            .expect("spawn the proxy");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.switch(Mode::Stopped);
        if matches!(*self.listener.lock().unwrap_or_else(|e| e.into_inner()), Listener::Open) {
            // Wakes the accept loop so it sees `Stopped` and drops the listener.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        }
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.mode.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for down in listener.incoming() {
        let Ok(down) = down else { continue };
        let (mode, generation) = {
            let st = lock(&shared);
            (st.mode, st.generation)
        };
        if mode == Mode::Stopped {
            return;
        }
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let Mode::Forward(target) = mode else { continue };
        let Ok(up) = TcpStream::connect_timeout(&target, DIAL_TIMEOUT) else { continue };
        let (Ok(d2), Ok(u2)) = (down.try_clone(), up.try_clone()) else { continue };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = lock(&shared);
            if st.generation != generation {
                continue; // switched while dialling: this connection belongs to the old target
            }
            st.links.push(Link { id, down: d2, up: u2 });
        }
        let _ = down.set_nodelay(true);
        let _ = up.set_nodelay(true);
        let ends = Arc::new(AtomicUsize::new(2));
        for (from, to) in [(&down, &up), (&up, &down)] {
            let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else { continue };
            let (shared, ends) = (shared.clone(), ends.clone());
            std::thread::spawn(move || {
                copy(from, to);
                if ends.fetch_sub(1, Ordering::AcqRel) == 1 {
                    lock(&shared).links.retain(|l| l.id != id);
                }
            });
        }
    }
}

/// Copies until `from` ends, then half-closes `to`; on an error both are cut.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that echoes each read prefixed by `reply` and closes when its peer does.
    fn answering(reply: &'static str) -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        let _ = s.write_all(&[reply.as_bytes(), &buf[..n]].concat());
                    }
                });
            }
        });
        addr
    }

    fn ask(addr: SocketAddr, what: &str) -> io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(what.as_bytes())?;
        s.shutdown(Shutdown::Write)?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// Ended by the peer with nothing more (end of stream or reset), not a read timeout.
    fn closed(got: &io::Result<String>) -> bool {
        match got {
            Ok(rest) => rest.is_empty(),
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected
            ),
        }
    }

    #[test]
    fn closed_refuses_then_forwards_switches_and_refuses() {
        let p = Proxy::closed();
        let e = TcpStream::connect(p.addr()).expect_err("closed: nothing listens");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(TcpListener::bind(p.addr()).is_err(), "the port stays held while closed");

        p.forward(answering("a:"));
        assert_eq!(ask(p.addr(), "x").unwrap(), "a:x");
        let mut held = TcpStream::connect(p.addr()).unwrap();
        held.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        held.write_all(b"1").unwrap();
        let mut two = [0u8; 3];
        held.read_exact(&mut two).unwrap();

        p.forward(answering("b:"));
        assert_eq!(ask(p.addr(), "y").unwrap(), "b:y", "switched");
        let mut rest = Vec::new();
        let cut = held.read_to_end(&mut rest).map(|_| String::from_utf8_lossy(&rest).into_owned());
        assert!(closed(&cut), "a connection to the old target is cut: {cut:?}");

        p.refuse();
        let got = ask(p.addr(), "z");
        assert!(closed(&got), "refused: closed at once, got {got:?}");
        p.forward(answering("c:"));
        assert_eq!(ask(p.addr(), "w").unwrap(), "c:w", "back from refusing");
        assert_eq!(p.accepted(), 5, "every connection counted, the refused one too");
    }
}
