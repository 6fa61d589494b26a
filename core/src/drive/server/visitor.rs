//! One visitor connection: requests one after another, each answered by the front door or
//! relayed over a tunnel connection checked out of the hub.
//!
//! A visitor that leaves while its request waits for a connection is taken out of the queue; a
//! grant that crossed it goes back unused. A visitor that leaves mid-response has the rest of the
//! response drained (within [`DRAIN_BUDGET`]) so the connection can be checked in.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;

use super::*;

/// One visitor connection: requests one after another, each answered or relayed.
pub(super) async fn visitor<R: Rt>(mut stream: R::Stream, addr: SocketAddr, shared: Arc<Shared<R>>) {
    let rt = &shared.rt;
    let ip = addr.ip().to_string();
    let deadlines =
        HeadDeadlines { idle: Some(shared.limits.idle_keepalive), head: Some(shared.limits.head_timeout) };
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut dec = Decoder::request(&shared.limits);
    // What the tunnel connection sent for the current exchange; kept across requests to spare allocations.
    let mut tbuf = BytesMut::new();
    // The connection's one timer: head deadlines, then a drain's.
    let mut clock = Deadline::default();
    loop {
        let head = match read_head(rt, &mut stream, &mut buf, &mut dec, deadlines, &mut clock).await {
            Ok(head) => head,
            Err(HeadError::Frame(e)) => return write_and_close(&mut stream, &front::frame_error(e)).await,
            Err(HeadError::TimedOut) => return write_and_close(&mut stream, &front::head_timeout()).await,
            Err(HeadError::Closed) => return,
        };
        let mut admit = None;
        shared.hub(|hub, now| {
            let visitor = Visitor { addr: &ip, local: &shared.local };
            admit = Some(front::admit(&shared.front, hub, now, &head, visitor, || rt.entropy(), &mut dec));
        });
        let (tunnel, forward) = match admit {
            Some(Admit::Proxy(tunnel, forward)) => (tunnel, forward),
            Some(Admit::Reply { bytes, close }) => {
                if write_all(&mut stream, &bytes).await.is_err() || close {
                    return;
                }
                continue;
            }
            None => return,
        };
        let waiter = WaiterId(shared.next_id());
        let (tx, mut rx) = oneshot();
        shared.lock().routes.waiters.insert(waiter, tx);
        shared.hub(|hub, now| hub.handle(now, Input::Checkout { waiter, tunnel }));
        // A visitor gone is seen first: a grant that came at the same time goes back unused
        // instead of carrying a request nobody waits for.
        let granted = match select_biased(left(&mut stream), &mut rx).await {
            Either::First(()) => return cancel(&shared, waiter, rx),
            Either::Second(granted) => granted,
        };
        let mut lease = match granted {
            Some(Ok(lease)) => lease,
            Some(Err(why)) => {
                let (reply, close) = forward.refused(why, &mut dec);
                if write_all(&mut stream, &reply).await.is_err() || close {
                    return;
                }
                continue;
            }
            None => return,
        };
        let (req, resp) = forward.pumps(dec, &shared.limits);
        let (mut req, mut resp) = (Flow::new(req), Flow::new(resp).with_drain(DRAIN_BUDGET));
        tbuf.clear();
        let outcome = exchange(
            rt,
            &mut stream,
            &mut buf,
            &mut lease.stream,
            &mut tbuf,
            &mut req,
            &mut resp,
            &mut clock,
        )
        .await;
        let resp = resp.into_pump();
        let (request_end, response_end) = match outcome {
            Outcome::Done { request, response } => (request, response),
            Outcome::RequestFailed { frame, response_started } => {
                lease.end();
                if let Some(reply) = front::broken(frame, response_started) {
                    let _ = write_all(&mut stream, &reply).await;
                }
                return;
            }
            Outcome::ResponseFailed { response_started } => {
                lease.end();
                if let Some(reply) = front::broken(None, response_started) {
                    let _ = write_all(&mut stream, &reply).await;
                }
                return;
            }
            Outcome::Abandoned { request, response } => {
                // The visitor left and the response was read to its end: the connection may be in step.
                match resp.settle(request, response, !tbuf.is_empty()).upstream {
                    After::Reuse => lease.checkin(),
                    After::Close | After::Raw => lease.end(),
                }
                return;
            }
        };
        // Bytes after the response would be taken for the next one: that connection is done.
        let settled = resp.settle(request_end, response_end, !tbuf.is_empty());
        match settled.upstream {
            After::Raw => {
                // The connection leaves the pool now (the hub forgets it), so the client can replace it.
                let Lease { stream: mut tunnel, back } = lease;
                let _ = back.send(Back::Retire);
                let _ = splice(&mut stream, &buf, &mut tunnel, &tbuf).await;
                return;
            }
            After::Reuse => lease.checkin(),
            After::Close => lease.end(),
        }
        dec = req.into_pump().into_decoder();
        if settled.downstream != After::Reuse {
            return;
        }
        dec.reset();
    }
}

/// The visitor left while waiting: take it out of the queue, or hand back a connection granted meanwhile.
fn cancel<R: Rt>(shared: &Shared<R>, waiter: WaiterId, mut rx: Receiver<Result<Lease<R::Stream>, Refusal>>) {
    if let Some(Ok(lease)) = rx.close() {
        lease.checkin();
        return;
    }
    shared.lock().routes.waiters.remove(&waiter);
    shared.hub(|hub, now| hub.handle(now, Input::Cancel { waiter }));
}
