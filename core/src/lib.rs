//! # aether-core: the tunnel protocol with no I/O
//!
//! aether makes a service on a developer's machine reachable at a public URL.
//! A public server (`aether serve`) accepts visitors' HTTP requests and passes
//! each one down a TCP connection that the developer's client (`aether share`)
//! opened to it beforehand; the client forwards it to the local service and
//! streams the response back up.
//!
//! ```text
//! visitor ──HTTP──▶ server :8080 ──route──▶ pool of tunnel connections ◀──dialled by── client ──▶ origin :3000
//!                        │ registration (GET /?new)  ▲ handshake "<id> <token>\n" on :62322
//! ```
//!
//! This crate holds every decision of that system and none of its I/O: no
//! sockets, threads, clocks or entropy source. Bytes and [`Instant`](std::time::Instant)s
//! go in; frames, decisions and bytes to send come out. The runtime adapters
//! (tokio and smol) are thin loops that carry them out.
//!
//! ## The machines
//!
//! | module | models |
//! | --- | --- |
//! | [`id`] | tunnel names (`adjective-color-animal`, the 4–63 rule) and ownership tokens |
//! | [`handshake`] | the tunnel port's `<id> <token>\n` line and its verdict line |
//! | [`backoff`] | capped exponential backoff with full jitter from the seeded [`entropy::Rng`] |
//! | [`register`] | the client's registration call: its request and the reading of the reply |
//! | [`supervisor`] | the client's control machine: when to register, dial, redial and register again |
//! | [`http`] | HTTP/1.1 message framing in both directions, strict on ambiguity, streaming bodies |
//! | [`relay`] | one proxied exchange: each direction's bytes to write, and whether each connection is reused |
//! | [`front`] | the server's front door: what a request head gets, and the replies aether writes itself |
//! | [`options`] | what `serve` and `share` are asked for, shared by the CLI and both runtimes |
//! | [`route`] | which of register / landing / status / proxy a visitor's request is |
//! | [`hub`] | the server's control machine: registrations, hellos, visitor checkouts, deadlines |
//! | [`pool`] | one tunnel's connections: exclusive round-robin leases and a bounded FIFO of waiting requests |
//! | [`registry`] | the server's tunnels: names, tokens, presence, offline grace |
//!
//! ## Two shapes of machine
//!
//! **Byte framers** ([`handshake::HelloDecoder`], [`http::Decoder`]) decode
//! from a caller-owned `BytesMut`: each call consumes a prefix, returns at most
//! one frame, and leaves every unread byte in the buffer (so nothing read past a
//! handshake or a message is lost). `Ok(None)` means "read more".
//!
//! **Control machines** (the server's registry and pools, the client's
//! supervisor) take inputs with a `now` and produce outputs; they hold ids,
//! never sockets or bytes.
//!
//! ## The driving contract
//!
//! Every control machine is driven the same way, and adapters must follow it:
//!
//! 1. After every `handle(now, input)` (or other mutating call), drain
//!    `poll()` until it returns `None`, carrying out each output.
//! 2. Then read `poll_timeout()` and re-arm the one timer to that instant
//!    (`None`: no timer).
//! 3. When the timer fires, read the clock yourself, and call
//!    `handle_timeout(now)` only if `now` has reached the deadline; then go to 1.
//!
//! `now` may be passed unevenly but must not be trusted to be monotonic:
//! machines clamp it so time never goes backwards. After `handle_timeout(t)`,
//! `poll_timeout()` is `None` or later than `t`, so the loop cannot spin.
//!
//! ```text
//! loop {
//!     select! {
//!         input = next_socket_event() => machine.handle(Instant::now(), input),
//!         _ = sleep_until(deadline)   => if Instant::now() >= deadline { machine.handle_timeout(Instant::now()) },
//!     }
//!     while let Some(out) = machine.poll() { carry_out(out) }
//!     deadline = machine.poll_timeout();
//! }
//! ```
//!
//! ## Randomness
//!
//! Adapters read the OS entropy source; core receives the bytes. Secret tokens
//! are made directly from those bytes; everything else that needs variety
//! (random ids, backoff jitter) uses the seeded [`entropy::Rng`].
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod backoff;
#[cfg(feature = "drive")]
pub mod drive;
pub mod entropy;
pub mod front;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod http;
pub mod hub;
pub mod id;
pub mod idmap;
pub mod limits;
pub mod options;
pub mod pool;
pub mod register;
pub mod registry;
pub mod relay;
pub mod route;
pub mod supervisor;

pub use limits::Limits;
