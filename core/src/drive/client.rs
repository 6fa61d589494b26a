//! `aether share`, sequenced once: the loop that carries out the supervisor's outputs, the
//! registration call, and the tunnel connections that relay requests to the origin.
//!
//! ```text
//!  supervisor loop ─Register─▶ register task ─Registered / RegisterFailed─▶ mailbox ─▶ supervisor
//!                  ─Connect──▶ tunnel task: dial ─▶ hello ─▶ verdict ─▶ relay_requests ─Closed─▶ mailbox
//!                  ─Close / CancelRegister─▶ Abort
//! ```
//!
//! Tasks are [`abortable`], so cancelling means the same on every runtime. It decides nothing:
//! the supervisor says when to register, dial and redial; [`relay`](crate::relay) and
//! [`front`](crate::front) say what each exchange means.

use crate::idmap::IdMap;
use std::sync::Arc;

use bytes::BytesMut;

use super::Rt;
use super::sync::{Abort, Either, Mailbox, abortable, select_biased};
use super::time::{Deadline, timeout_at};
use super::wire::{
    Discard, HeadDeadlines, READ_CHUNK, exchange, one_way, probe, read_head, read_some, splice, write_all,
};
use crate::front;
use crate::handshake::{Hello, Verdict, VerdictDecoder, encode_hello};
use crate::http::Decoder;
use crate::id::{Token, TunnelId};
use crate::limits::Limits;
use crate::options::{Report, RequestLog, ShareOptions};
use crate::register::{ReplyReader, encode_call};
use crate::relay::{After, Ending, Flow, Outcome, Pump, Sink, may_retry};
use crate::supervisor::{
    ClientEvent, Input, Output, RegisterFailure, RegisterId, Registration, SlotId, Supervisor,
};

use super::handle::{ReportFn, StatusCell};
use crate::options::ShareStatus;

/// Runs the supervisor until it gives up.
pub(crate) async fn run<R: Rt>(rt: R, opts: ShareOptions, report: ReportFn, status: Arc<StatusCell>) {
    let opts = Arc::new(opts);
    let inbox = Mailbox::default();
    let seed = u64::from_le_bytes(rt.entropy()[..8].try_into().unwrap_or_default());
    let mut sup = Supervisor::new(rt.now(), opts.client_config(seed));
    let mut calls: IdMap<RegisterId, Abort> = IdMap::default();
    let mut conns: IdMap<SlotId, Abort> = IdMap::default();
    let mut clock = Deadline::default();
    loop {
        while let Some(out) = sup.poll() {
            match out {
                Output::Register { attempt, name, resume } => {
                    let call = register(rt.clone(), opts.clone(), name, resume);
                    let inbox = inbox.clone();
                    let (abort, task) = abortable(async move {
                        inbox.send(match call.await {
                            Ok(reply) => Input::Registered { attempt, reply },
                            Err(why) => Input::RegisterFailed { attempt, why },
                        });
                    });
                    rt.spawn(task);
                    calls.insert(attempt, abort);
                }
                Output::CancelRegister { attempt } => {
                    calls.remove(&attempt).inspect(Abort::abort);
                }
                Output::Connect { slot, port, hello, expect_verdict } => {
                    let dial = Dial { slot, port, hello, expect_verdict };
                    let (abort, task) =
                        abortable(tunnel(rt.clone(), opts.clone(), dial, inbox.clone(), report.clone()));
                    rt.spawn(task);
                    conns.insert(slot, abort);
                }
                Output::Close { slot } => {
                    conns.remove(&slot).inspect(Abort::abort);
                }
                Output::Event(event) => {
                    match &event {
                        ClientEvent::Online { url, .. } => status.set(ShareStatus::Online(url.clone())),
                        ClientEvent::Fatal { error } => status.set(ShareStatus::Fatal(error.to_string())),
                        _ => {}
                    }
                    report(&Report::Client(event));
                }
            }
        }
        if sup.is_fatal() {
            conns.values().for_each(Abort::abort);
            return;
        }
        let deadline = sup.poll_timeout();
        clock.set(&rt, deadline);
        match select_biased(inbox.recv(), clock.passed(&rt)).await {
            Either::First(input) => {
                match &input {
                    Input::Registered { attempt, .. } | Input::RegisterFailed { attempt, .. } => {
                        calls.remove(attempt);
                    }
                    Input::ConnectFailed { slot } | Input::Closed { slot, .. } => {
                        conns.remove(slot);
                    }
                    Input::Connected { .. } | Input::Verdict { .. } => {}
                }
                sup.handle(rt.now(), input);
            }
            Either::Second(()) => {
                if deadline.is_some_and(|at| rt.now() >= at) {
                    sup.handle_timeout(rt.now());
                }
            }
        }
    }
}

/// One registration call (the supervisor owns its deadline).
async fn register<R: Rt>(
    rt: R,
    opts: Arc<ShareOptions>,
    name: Option<TunnelId>,
    resume: Option<Token>,
) -> Result<Registration, RegisterFailure> {
    let authority = opts.server_authority();
    let mut s = rt.connect(authority.to_owned()).await.map_err(|_| RegisterFailure::Unreachable)?;
    let mut out = BytesMut::new();
    encode_call(authority, name.as_ref(), resume.as_ref(), &mut out);
    write_all(&mut s, &out).await.map_err(|_| RegisterFailure::Unreachable)?;
    let mut reader = ReplyReader::default();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(reg) = reader.feed(&mut buf, false)? {
            return Ok(reg);
        }
        if read_some(&mut s, &mut buf, 4096).await.map_err(|_| RegisterFailure::Unreachable)? == 0 {
            return reader.feed(&mut buf, true)?.ok_or(RegisterFailure::BadReply);
        }
    }
}

/// What the supervisor asked one tunnel connection to do.
struct Dial {
    slot: SlotId,
    port: u16,
    hello: Option<Hello>,
    expect_verdict: bool,
}

/// `host:port`, with an IPv6 host in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// One tunnel connection: dial, hello, verdict, then relay requests until it ends.
async fn tunnel<R: Rt>(rt: R, opts: Arc<ShareOptions>, dial: Dial, inbox: Mailbox<Input>, report: ReportFn) {
    let slot = dial.slot;
    let failed = |inbox: &Mailbox<Input>| inbox.send(Input::ConnectFailed { slot });
    let Ok(mut stream) = rt.connect(host_port(opts.server_host(), dial.port)).await else {
        return failed(&inbox);
    };
    if let Some(hello) = dial.hello {
        let mut line = BytesMut::new();
        encode_hello(&hello, &mut line);
        if write_all(&mut stream, &line).await.is_err() {
            return failed(&inbox);
        }
    }
    inbox.send(Input::Connected { slot });
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    if dial.expect_verdict {
        let limits = Limits::default();
        let mut dec = VerdictDecoder::new(&limits);
        let verdict = loop {
            match dec.decode(&mut buf) {
                Ok(Some(v)) => break v,
                Ok(None) => {}
                Err(_) => return failed(&inbox),
            }
            if !matches!(read_some(&mut stream, &mut buf, READ_CHUNK).await, Ok(n) if n > 0) {
                return failed(&inbox);
            }
        };
        inbox.send(Input::Verdict { slot, verdict });
        if verdict != Verdict::Accepted {
            return;
        }
    }
    match relay_requests(&rt, &mut stream, buf, &opts, &report).await {
        Relayed::Ended(served) => inbox.send(Input::Closed { slot, served }),
        Relayed::Switched { mut origin, tunnel_buf, origin_buf } => {
            // The connection left the pool on both ends: the slot is redialled while this one carries
            // the switched protocol until either side closes.
            inbox.send(Input::Closed { slot, served: true });
            let _ = splice(&mut stream, &tunnel_buf, &mut origin, &origin_buf).await;
        }
    }
}

/// How a tunnel connection's requests ended.
enum Relayed<S> {
    /// The connection is done; whether it carried a request.
    Ended(bool),
    /// A protocol switch: the tunnel and this origin connection now carry raw bytes, after what each
    /// side had already buffered.
    Switched {
        /// The origin connection.
        origin: S,
        /// Bytes read from the tunnel, for the origin.
        tunnel_buf: BytesMut,
        /// Bytes read from the origin, for the tunnel.
        origin_buf: BytesMut,
    },
}

/// Relays requests from the tunnel connection to the origin until it ends or switches protocols.
async fn relay_requests<R: Rt>(
    rt: &R,
    tunnel: &mut R::Stream,
    mut buf: BytesMut,
    opts: &ShareOptions,
    report: &ReportFn,
) -> Relayed<R::Stream> {
    let limits = Limits::default();
    let deadlines = HeadDeadlines { idle: None, head: Some(limits.head_timeout) };
    let mut dec = Decoder::request(&limits);
    let mut origin: Option<R::Stream> = None;
    let mut obuf = BytesMut::with_capacity(READ_CHUNK);
    let mut served = false;
    // The connection's one timer: a head's deadline, the origin's connect timeout.
    let mut clock = Deadline::default();
    loop {
        let Ok(head) = read_head(rt, tunnel, &mut buf, &mut dec, deadlines, &mut clock).await else {
            return Relayed::Ended(served);
        };
        served = true;
        let started = rt.now();
        let raw = head.raw();
        let log = |status: u16| {
            let method = raw.split(|&b| b == b' ').next().unwrap_or_default();
            report(&Report::Request(RequestLog {
                method: String::from_utf8_lossy(method).into_owned(),
                path: String::from_utf8_lossy(head.target()).into_owned(),
                status,
                duration: rt.now().saturating_duration_since(started),
            }))
        };
        let mut req = Flow::new(Pump::request_body(dec));
        let (o, reused) = match connect_origin(rt, &mut origin, &mut obuf, opts, raw, &mut clock).await {
            Ok(o) => o,
            Err(error) => {
                // The body still comes down the tunnel: read it past, so the connection stays in step.
                let sunk = one_way(rt, tunnel, &mut buf, &mut Discard, &mut req, &mut clock).await;
                let reply = front::origin_unreachable(&opts.origin(), &error, &head);
                log(502);
                if write_all(tunnel, &reply).await.is_err()
                    || !matches!(sunk, Ok(Ending::Message { keep_alive: true }))
                {
                    return Relayed::Ended(served);
                }
                dec = req.into_pump().into_decoder();
                dec.reset();
                continue;
            }
        };
        let mut resp = Flow::new(Pump::response(&limits, head.request_info(), Sink::Peer));
        let mut outcome = exchange(rt, tunnel, &mut buf, o, &mut obuf, &mut req, &mut resp, &mut clock).await;
        if let Outcome::ResponseFailed { response_started } = outcome
            && may_retry(head.method(), head.body(), reused, response_started)
        {
            // The origin closed the kept connection just as the request went out: once more, fresh.
            origin = None;
            if let Ok((o, _)) = connect_origin(rt, &mut origin, &mut obuf, opts, raw, &mut clock).await {
                resp = Flow::new(Pump::response(&limits, head.request_info(), Sink::Peer));
                let request = Some(Ending::Message { keep_alive: head.keep_alive() });
                outcome = match one_way(rt, o, &mut obuf, tunnel, &mut resp, &mut clock).await {
                    Ok(response) => Outcome::Done { request, response },
                    Err(_) => Outcome::ResponseFailed { response_started: resp.started() },
                };
            }
        }
        let resp = resp.into_pump();
        log(resp.status().unwrap_or(0));
        let Outcome::Done { request, response } = outcome else { return Relayed::Ended(served) };
        let settled = resp.settle(request, response, !obuf.is_empty());
        if settled.upstream == After::Raw {
            return match origin.take() {
                Some(origin) => Relayed::Switched { origin, tunnel_buf: buf, origin_buf: obuf },
                None => Relayed::Ended(served),
            };
        }
        if settled.upstream != After::Reuse {
            origin = None;
            obuf.clear();
        }
        if settled.downstream != After::Reuse {
            return Relayed::Ended(served);
        }
        dec = req.into_pump().into_decoder();
        dec.reset();
    }
}

/// The origin connection for the next request, with its head written: the kept one if it is still
/// open, else a new one within the origin timeout; and whether it was the kept one.
async fn connect_origin<'a, R: Rt>(
    rt: &R,
    origin: &'a mut Option<R::Stream>,
    obuf: &mut BytesMut,
    opts: &ShareOptions,
    head: &[u8],
    clock: &mut Deadline<R::Timer>,
) -> Result<(&'a mut R::Stream, bool), String> {
    if let Some(mut kept) = origin.take() {
        // Still open and silent: reuse it.
        if probe(&mut kept).is_none() && write_all(&mut kept, head).await.is_ok() {
            return Ok((origin.insert(kept), true));
        }
    }
    obuf.clear();
    let at = rt.now() + opts.origin_timeout;
    let mut fresh = match timeout_at(rt, clock, at, rt.connect(opts.origin())).await {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err(format!("no connection within {:?}", opts.origin_timeout)),
    };
    write_all(&mut fresh, head).await.map_err(|e| e.to_string())?;
    Ok((origin.insert(fresh), false))
}
