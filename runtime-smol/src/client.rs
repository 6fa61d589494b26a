//! `aether share` on smol: the loop that carries out the supervisor's outputs,
//! the registration call, and the tunnel connections that relay requests to
//! the origin.
//!
//! The loop owns a [`Task`] per registration call and per tunnel connection:
//! dropping one (a `CancelRegister` or `Close`, or the loop itself ending)
//! cancels it and closes its sockets.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use aether_core::front;
use aether_core::handshake::{Hello, Verdict, VerdictDecoder, encode_hello};
use aether_core::http::Decoder;
use aether_core::limits::Limits;
use aether_core::options::{Report, RequestLog, ShareOptions, ShareStatus};
use aether_core::register::{ReplyReader, encode_call};
use aether_core::relay::{After, Ending, Pump, Sink, may_retry};
use aether_core::supervisor::{
    ClientEvent, Input, Output, RegisterFailure, RegisterId, Registration, SlotId, Supervisor,
};
use async_io::Timer;
use async_net::TcpStream;
use bytes::BytesMut;
use futures_lite::future;
use futures_lite::io::AsyncWriteExt;
use smol::Task;
use smol::channel::{Sender, unbounded};

use crate::io::{HeadDeadlines, Outcome, exchange, read_buf, read_head, splice};
use crate::{ReportFn, Spawner, StatusCell};

/// Runs the supervisor until it gives up.
pub(crate) async fn run(opts: ShareOptions, report: ReportFn, status: Arc<StatusCell>, spawner: Spawner) {
    let opts = Arc::new(opts);
    let (tx, rx) = unbounded();
    let seed = u64::from_le_bytes(crate::entropy()[..8].try_into().unwrap_or_default());
    let mut sup = Supervisor::new(Instant::now(), opts.client_config(seed));
    let mut calls: HashMap<RegisterId, Task<()>> = HashMap::new();
    let mut conns: HashMap<SlotId, Task<()>> = HashMap::new();
    loop {
        while let Some(out) = sup.poll() {
            match out {
                Output::Register { attempt, name, resume } => {
                    let call = register(opts.clone(), name, resume);
                    let tx = tx.clone();
                    let task = spawner.spawn(async move {
                        let input = match call.await {
                            Ok(reply) => Input::Registered { attempt, reply },
                            Err(why) => Input::RegisterFailed { attempt, why },
                        };
                        let _ = tx.try_send(input);
                    });
                    keep(&mut calls, attempt, task);
                }
                Output::CancelRegister { attempt } => {
                    calls.remove(&attempt);
                }
                Output::Connect { slot, port, hello, expect_verdict } => {
                    let task =
                        tunnel(opts.clone(), slot, port, hello, expect_verdict, tx.clone(), report.clone());
                    keep(&mut conns, slot, spawner.spawn(task));
                }
                Output::Close { slot } => {
                    conns.remove(&slot);
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
            // Dropping the tasks cancels them.
            return;
        }
        let deadline = sup.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => {
                    Timer::at(at).await;
                }
                None => future::pending().await,
            }
        };
        let input = future::or(async { Some(rx.recv().await) }, async {
            sleep.await;
            None
        })
        .await;
        match input {
            Some(input) => {
                let Ok(input) = input else { return };
                // Its task is ending by itself: let it finish.
                match &input {
                    Input::Registered { attempt, .. } | Input::RegisterFailed { attempt, .. } => {
                        if let Some(task) = calls.remove(attempt) {
                            task.detach();
                        }
                    }
                    Input::ConnectFailed { slot } | Input::Closed { slot, .. } => {
                        if let Some(task) = conns.remove(slot) {
                            task.detach();
                        }
                    }
                    Input::Connected { .. } | Input::Verdict { .. } => {}
                }
                sup.handle(Instant::now(), input);
            }
            None => {
                if deadline.is_some_and(|at| Instant::now() >= at) {
                    sup.handle_timeout(Instant::now());
                }
            }
        }
    }
}

/// Keeps `task` under `key`; a task it replaces runs on, as it would have with tokio's handles.
fn keep<K: Hash + Eq>(tasks: &mut HashMap<K, Task<()>>, key: K, task: Option<Task<()>>) {
    if let Some(old) = task.and_then(|task| tasks.insert(key, task)) {
        old.detach();
    }
}

/// One registration call (the supervisor owns its deadline).
async fn register(
    opts: Arc<ShareOptions>,
    name: Option<aether_core::id::TunnelId>,
    resume: Option<aether_core::id::Token>,
) -> Result<Registration, RegisterFailure> {
    let authority = opts.server_authority();
    let mut s = TcpStream::connect(authority).await.map_err(|_| RegisterFailure::Unreachable)?;
    let _ = s.set_nodelay(true);
    let mut out = BytesMut::new();
    encode_call(authority, name.as_ref(), resume.as_ref(), &mut out);
    s.write_all(&out).await.map_err(|_| RegisterFailure::Unreachable)?;
    let mut reader = ReplyReader::default();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(reg) = reader.feed(&mut buf, false)? {
            return Ok(reg);
        }
        if read_buf(&mut s, &mut buf, crate::io::READ_CHUNK)
            .await
            .map_err(|_| RegisterFailure::Unreachable)?
            == 0
        {
            return reader.feed(&mut buf, true)?.ok_or(RegisterFailure::BadReply);
        }
    }
}

/// One tunnel connection: dial, hello, verdict, then relay requests until it ends.
async fn tunnel(
    opts: Arc<ShareOptions>,
    slot: SlotId,
    port: u16,
    hello: Option<Hello>,
    expect_verdict: bool,
    tx: Sender<Input>,
    report: ReportFn,
) {
    let failed = |tx: &Sender<Input>| {
        let _ = tx.try_send(Input::ConnectFailed { slot });
    };
    let Ok(mut stream) = TcpStream::connect((opts.server_host(), port)).await else { return failed(&tx) };
    let _ = stream.set_nodelay(true);
    if let Some(hello) = hello {
        let mut line = BytesMut::new();
        encode_hello(&hello, &mut line);
        if stream.write_all(&line).await.is_err() {
            return failed(&tx);
        }
    }
    let _ = tx.try_send(Input::Connected { slot });
    let mut buf = BytesMut::with_capacity(crate::io::READ_CHUNK);
    if expect_verdict {
        let limits = Limits::default();
        let mut dec = VerdictDecoder::new(&limits);
        let verdict = loop {
            match dec.decode(&mut buf) {
                Ok(Some(v)) => break v,
                Ok(None) => {}
                Err(_) => return failed(&tx),
            }
            if !matches!(read_buf(&mut stream, &mut buf, crate::io::READ_CHUNK).await, Ok(n) if n > 0) {
                return failed(&tx);
            }
        };
        let _ = tx.try_send(Input::Verdict { slot, verdict });
        if verdict != Verdict::Accepted {
            return;
        }
    }
    match relay_requests(&mut stream, buf, &opts, &report).await {
        Relayed::Ended(served) => {
            let _ = tx.try_send(Input::Closed { slot, served });
        }
        Relayed::Switched { mut origin, tunnel_buf, origin_buf } => {
            // The connection left the pool on both ends: the slot is redialled while this one carries
            // the switched protocol until either side closes.
            let _ = tx.try_send(Input::Closed { slot, served: true });
            let _ = splice(&mut stream, &tunnel_buf, &mut origin, &origin_buf).await;
        }
    }
}

/// How a tunnel connection's requests ended.
enum Relayed {
    /// The connection is done; whether it carried a request.
    Ended(bool),
    /// A protocol switch: the tunnel and this origin connection now carry raw bytes, after what each
    /// side had already buffered.
    Switched {
        /// The origin connection.
        origin: TcpStream,
        /// Bytes read from the tunnel, for the origin.
        tunnel_buf: BytesMut,
        /// Bytes read from the origin, for the tunnel.
        origin_buf: BytesMut,
    },
}

/// Relays requests from the tunnel connection to the origin until it ends or switches protocols.
async fn relay_requests(
    tunnel: &mut TcpStream,
    mut buf: BytesMut,
    opts: &ShareOptions,
    report: &ReportFn,
) -> Relayed {
    let limits = Limits::default();
    let deadlines = HeadDeadlines { idle: None, head: Some(limits.head_timeout) };
    let mut dec = Decoder::request(&limits);
    let mut origin: Option<TcpStream> = None;
    let mut obuf = BytesMut::with_capacity(crate::io::READ_CHUNK);
    let mut served = false;
    loop {
        let Ok(head) = read_head(tunnel, &mut buf, &mut dec, deadlines).await else {
            return Relayed::Ended(served);
        };
        served = true;
        let started = Instant::now();
        let raw = head.raw();
        let log = |status: u16| {
            let method = raw.split(|&b| b == b' ').next().unwrap_or_default();
            report(&Report::Request(RequestLog {
                method: String::from_utf8_lossy(method).into_owned(),
                path: String::from_utf8_lossy(head.target()).into_owned(),
                status,
                duration: started.elapsed(),
            }))
        };
        let mut req = Pump::request_body(dec);
        let (o, reused) = match connect_origin(&mut origin, &mut obuf, opts, raw).await {
            Ok(o) => o,
            Err(error) => {
                // The body still comes down the tunnel: read it past, so the connection stays in step.
                let sunk = crate::io::pump(
                    tunnel,
                    &mut buf,
                    &mut futures_lite::io::sink(),
                    &mut req,
                    &AtomicBool::new(false),
                    None,
                )
                .await;
                let reply = front::origin_unreachable(&opts.origin(), &error, &head);
                log(502);
                if tunnel.write_all(&reply).await.is_err()
                    || !matches!(sunk, Ok(Ending::Message { keep_alive: true }))
                {
                    return Relayed::Ended(served);
                }
                dec = req.into_decoder();
                dec.reset();
                continue;
            }
        };
        let mut resp = Pump::response(&limits, head.request_info(), Sink::Peer);
        let mut outcome = exchange(tunnel, &mut buf, &mut req, o, &mut obuf, &mut resp, None).await;
        if let Outcome::ResponseFailed { response_started } = outcome
            && may_retry(head.method(), head.body(), reused, response_started)
        {
            // The origin closed the kept connection just as the request went out: once more, fresh.
            origin = None;
            if let Ok((o, _)) = connect_origin(&mut origin, &mut obuf, opts, raw).await {
                resp = Pump::response(&limits, head.request_info(), Sink::Peer);
                let request = Some(Ending::Message { keep_alive: head.keep_alive() });
                outcome =
                    match crate::io::pump(o, &mut obuf, tunnel, &mut resp, &AtomicBool::new(false), None)
                        .await
                    {
                        Ok(response) => Outcome::Done { request, response },
                        Err(_) => Outcome::ResponseFailed { response_started: resp.started() },
                    };
            }
        }
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
        dec = req.into_decoder();
        dec.reset();
    }
}

/// The origin connection for the next request, with its head written: the kept one if it is still
/// open, else a new one; and whether it was the kept one.
async fn connect_origin<'a>(
    origin: &'a mut Option<TcpStream>,
    obuf: &mut BytesMut,
    opts: &ShareOptions,
    head: &[u8],
) -> Result<(&'a mut TcpStream, bool), String> {
    if let Some(mut kept) = origin.take() {
        let mut probe = [0u8; 1];
        // Still open and silent (the peek would wait): reuse it.
        let idle = future::poll_once(kept.peek(&mut probe)).await.is_none();
        if idle && kept.write_all(head).await.is_ok() {
            return Ok((origin.insert(kept), true));
        }
    }
    obuf.clear();
    let addr = opts.origin();
    let connect = async { Some(TcpStream::connect(&addr).await) };
    let timeout = async {
        Timer::after(opts.origin_timeout).await;
        None
    };
    let mut fresh = match future::or(connect, timeout).await {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err(format!("no connection within {:?}", opts.origin_timeout)),
    };
    let _ = fresh.set_nodelay(true);
    fresh.write_all(head).await.map_err(|e| e.to_string())?;
    Ok((origin.insert(fresh), false))
}
