//! `aether share` on tokio: the loop that carries out the supervisor's outputs,
//! the registration call, and the tunnel connections that relay requests to
//! the origin.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant as StdInstant;

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
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::AbortHandle;

use crate::io::{Deadline, HeadDeadlines, Outcome, exchange, read_head, splice};
use crate::{ReportFn, StatusCell};

/// Runs the supervisor until it gives up.
pub(crate) async fn run(opts: ShareOptions, report: ReportFn, status: Arc<StatusCell>) {
    let opts = Arc::new(opts);
    let (tx, mut rx) = unbounded_channel();
    let seed = u64::from_le_bytes(crate::entropy()[..8].try_into().unwrap_or_default());
    let mut sup = Supervisor::new(StdInstant::now(), opts.client_config(seed));
    let mut calls: HashMap<RegisterId, AbortHandle> = HashMap::new();
    let mut conns: HashMap<SlotId, AbortHandle> = HashMap::new();
    loop {
        while let Some(out) = sup.poll() {
            match out {
                Output::Register { attempt, name, resume } => {
                    let call = register(opts.clone(), name, resume);
                    let tx = tx.clone();
                    let task = tokio::spawn(async move {
                        let input = match call.await {
                            Ok(reply) => Input::Registered { attempt, reply },
                            Err(why) => Input::RegisterFailed { attempt, why },
                        };
                        let _ = tx.send(input);
                    });
                    calls.insert(attempt, task.abort_handle());
                }
                Output::CancelRegister { attempt } => {
                    calls.remove(&attempt).inspect(AbortHandle::abort);
                }
                Output::Connect { slot, port, hello, expect_verdict } => {
                    let task =
                        tunnel(opts.clone(), slot, port, hello, expect_verdict, tx.clone(), report.clone());
                    conns.insert(slot, tokio::spawn(task).abort_handle());
                }
                Output::Close { slot } => {
                    conns.remove(&slot).inspect(AbortHandle::abort);
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
            conns.values().for_each(AbortHandle::abort);
            return;
        }
        let deadline = sup.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { return };
                match &input {
                    Input::Registered { attempt, .. } | Input::RegisterFailed { attempt, .. } => {
                        calls.remove(attempt);
                    }
                    Input::ConnectFailed { slot } | Input::Closed { slot, .. } => {
                        conns.remove(slot);
                    }
                    Input::Connected { .. } | Input::Verdict { .. } => {}
                }
                sup.handle(StdInstant::now(), input);
            }
            _ = sleep => {
                if deadline.is_some_and(|at| StdInstant::now() >= at) {
                    sup.handle_timeout(StdInstant::now());
                }
            }
        }
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
    let mut out = BytesMut::new();
    encode_call(authority, name.as_ref(), resume.as_ref(), &mut out);
    s.write_all(&out).await.map_err(|_| RegisterFailure::Unreachable)?;
    let mut reader = ReplyReader::default();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(reg) = reader.feed(&mut buf, false)? {
            return Ok(reg);
        }
        if s.read_buf(&mut buf).await.map_err(|_| RegisterFailure::Unreachable)? == 0 {
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
    tx: UnboundedSender<Input>,
    report: ReportFn,
) {
    let failed = |tx: &UnboundedSender<Input>| {
        let _ = tx.send(Input::ConnectFailed { slot });
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
    let _ = tx.send(Input::Connected { slot });
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
            if !matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
                return failed(&tx);
            }
        };
        let _ = tx.send(Input::Verdict { slot, verdict });
        if verdict != Verdict::Accepted {
            return;
        }
    }
    match relay_requests(&mut stream, buf, &opts, &report).await {
        Relayed::Ended(served) => {
            let _ = tx.send(Input::Closed { slot, served });
        }
        Relayed::Switched { mut origin, tunnel_buf, origin_buf } => {
            // The connection left the pool on both ends: the slot is redialled while this one carries
            // the switched protocol until either side closes.
            let _ = tx.send(Input::Closed { slot, served: true });
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
    let mut clock = Deadline::default();
    loop {
        let Ok(head) = read_head(tunnel, &mut buf, &mut dec, deadlines, &mut clock).await else {
            return Relayed::Ended(served);
        };
        served = true;
        let started = StdInstant::now();
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
                    &mut tokio::io::sink(),
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
    if let Some(kept) = origin.take() {
        let mut probe = [0u8; 1];
        // Still open and silent: reuse it.
        let idle = matches!(kept.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        if idle {
            let mut kept = kept;
            if kept.write_all(head).await.is_ok() {
                return Ok((origin.insert(kept), true));
            }
        }
    }
    obuf.clear();
    let addr = opts.origin();
    let mut fresh = match tokio::time::timeout(opts.origin_timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no connection within {:?}", opts.origin_timeout)),
    };
    let _ = fresh.set_nodelay(true);
    fresh.write_all(head).await.map_err(|e| e.to_string())?;
    Ok((origin.insert(fresh), false))
}
