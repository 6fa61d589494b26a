//! The server's front door: what a visitor's request head gets, and every reply
//! aether writes on its own account (registration, status, redirects, errors).
//!
//! ```text
//! head ─▶ route ─┬─ Register / Landing / status ─▶ Admit::Reply (JSON, 302, 403, 404, 409 ...)
//!                └─ Proxy(id) ─▶ Admit::Proxy(tunnel, rewritten head) ─▶ hub checkout ─▶ relay
//! ```
//!
//! It does not read bodies: a request the server answers itself that carries
//! one is answered and its connection closed, so no unread bytes are taken
//! for the next request. It does not pick tunnel connections (see
//! [`hub`](crate::hub)) or move bodies (see [`relay`](crate::relay)).

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::http::encode::{Reply, encode_frame_error};
use crate::http::rewrite::{Forwarding, Proto, rewrite_request};
use crate::http::{BodyKind, Decoder, Frame, FrameError, Head, Method, RequestInfo, Role};
use crate::hub::{Hub, MemStats, Refusal, RegisterError, RegisterRequest};
use crate::id::{Token, TunnelId};
use crate::limits::Limits;
use crate::registry::ceil_secs;
use crate::relay::{Pump, Sink};
use crate::route::{Route, RouteConfig, route};

/// The header a client sends on `/?new=<name>` to resume the tunnel it held.
pub const TOKEN_HEADER: &str = "Aether-Tunnel-Token";

/// How the front door answers.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// Domain or path routing.
    pub route: RouteConfig,
    /// The scheme visitors use (`https` behind a TLS terminator).
    pub proto: Proto,
    /// Where `GET /` redirects.
    pub landing: String,
    /// Reads the process's memory figures for `/api/status`.
    pub mem: fn() -> MemStats,
}

/// What to do with one visitor request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Write `bytes`; then close the visitor connection if `close`, else read the next request.
    Reply {
        /// The whole response.
        bytes: Bytes,
        /// Close after writing.
        close: bool,
    },
    /// Check out a connection of this tunnel, then relay the request and the response over it.
    Proxy(TunnelId, Forward),
}

/// A request on its way to a tunnel: what to send, and how to answer if no connection comes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    head: Bytes,
    request: RequestInfo,
    expects_continue: bool,
    head_only: bool,
    has_body: bool,
}

impl Forward {
    /// The reply when the hub gives no connection, and whether to close; when not closing, `dec` is
    /// ready for the visitor's next request.
    pub fn refused(&self, why: Refusal, dec: &mut Decoder) -> (Bytes, bool) {
        let close = finish(dec, self.has_body || !self.request.keep_alive);
        (refusal(why, close, self.head_only), close)
    }

    /// The two pumps of the exchange: the rewritten request (its head held as [`Pump::request`]
    /// says) and its response, rewritten for the visitor.
    pub fn pumps(self, dec: Decoder, limits: &Limits) -> (Pump, Pump) {
        (
            Pump::request(dec, self.head, self.expects_continue),
            Pump::response(limits, self.request, Sink::Visitor),
        )
    }
}

/// Readies `dec` for the next request after a body-less one was answered; says whether to close instead.
fn finish(dec: &mut Decoder, close: bool) -> bool {
    if close {
        return true;
    }
    // A body-less request's end needs no bytes.
    let ended = matches!(dec.decode(&mut BytesMut::new()), Ok(Some(Frame::End { keep_alive: true })));
    dec.reset();
    !ended
}

/// Who is asking, as the adapter knows it.
#[derive(Debug, Clone, Copy)]
pub struct Visitor<'a> {
    /// The visitor's IP address, for `X-Forwarded-For`.
    pub addr: &'a str,
    /// The server's own `host:port`, for registration URLs when the request has no `Host`.
    pub local: &'a str,
}

/// Decides what a request head gets; registers tunnels and renders status on the way.
///
/// `entropy` is called (for OS randomness) only when a tunnel is registered.
pub fn admit(
    cfg: &FrontConfig,
    hub: &mut Hub,
    now: Instant,
    head: &Head,
    visitor: Visitor<'_>,
    entropy: impl FnOnce() -> [u8; 32],
    dec: &mut Decoder,
) -> Admit {
    let method = head.method().unwrap_or(Method::Other);
    let request = head.request_info();
    let has_body = head.body() != BodyKind::Empty;
    // A body we do not read would be taken for the next request: answer, then close.
    let close = !request.keep_alive || has_body;
    let head_only = method == Method::Head;
    let reply = |status: u16, content_type: &str, body: &[u8], headers: &[(&str, &str)]| {
        let mut out = BytesMut::new();
        Reply { status, content_type, body, headers, close, head_only }.encode(&mut out);
        Admit::Reply { bytes: out.freeze(), close }
    };
    let text = |status: u16, msg: &str, headers: &[(&str, &str)]| {
        reply(status, "text/plain; charset=utf-8", format!("{msg}\n").as_bytes(), headers)
    };
    let json =
        |status: u16, value: &dyn erased::Json| reply(status, "application/json", &value.to_json(), &[]);
    let reply = match route(&cfg.route, method, head.host(), head.target()) {
        Err(e) => text(e.status(), &e.to_string(), &[]),
        Ok(Route::Landing) => text(302, "see the landing page", &[("Location", &cfg.landing)]),
        Ok(Route::ServerStatus) => json(200, &hub.server_status((cfg.mem)())),
        Ok(Route::TunnelStatus(id)) => match hub.tunnel_status(now, &id) {
            Some(status) => json(200, &status),
            None => text(404, Refusal::UnknownTunnel.message(), &[]),
        },
        Ok(Route::Register { name }) => {
            let host = head.host().map_or(visitor.local, |h| std::str::from_utf8(h).unwrap_or(visitor.local));
            match head.field(TOKEN_HEADER).map(Token::parse).transpose() {
                Err(_) => text(400, &format!("malformed {TOKEN_HEADER} header"), &[]),
                Ok(resume) => {
                    match hub.register(
                        now,
                        RegisterRequest { name, resume, host: host.to_owned() },
                        entropy(),
                    ) {
                        Ok(reg) => json(200, &reg),
                        Err(e @ RegisterError::NameTaken { retry_after: Some(after) }) => {
                            text(409, &e.to_string(), &[("Retry-After", &ceil_secs(after).to_string())])
                        }
                        Err(e) => text(e.status(), &e.to_string(), &[]),
                    }
                }
            }
        }
        Ok(Route::Proxy { tunnel, target }) => {
            let mut out = BytesMut::new();
            let fwd = Forwarding { client: visitor.addr, proto: cfg.proto, target };
            let request = rewrite_request(head, &fwd, &mut out);
            let expects_continue = head.expects_continue();
            return Admit::Proxy(
                tunnel,
                Forward { head: out.freeze(), request, expects_continue, head_only, has_body },
            );
        }
    };
    match reply {
        Admit::Reply { bytes, close } => Admit::Reply { close: finish(dec, close), bytes },
        proxy => proxy,
    }
}

/// The reply to a request the hub gave no connection; `close` when its body was not read.
pub fn refusal(why: Refusal, close: bool, head_only: bool) -> Bytes {
    let secs;
    let retry: &[(&str, &str)] = match why {
        Refusal::Offline { retry_after } => {
            secs = ceil_secs(retry_after).max(1).to_string();
            &[("Retry-After", secs.as_str())]
        }
        _ => &[],
    };
    let body = format!("{}\n", why.message());
    let mut out = BytesMut::new();
    Reply { headers: retry, close, head_only, ..Reply::text(why.status(), &body) }.encode(&mut out);
    out.freeze()
}

/// The reply to a visitor request that could not be framed (400, 414, 431, 501 ...); always closes.
pub fn frame_error(err: FrameError) -> Bytes {
    let mut out = BytesMut::new();
    encode_frame_error(err, Role::Request, &mut out);
    out.freeze()
}

/// A visitor sent part of a head and then nothing within the head deadline (408); closes.
pub fn head_timeout() -> Bytes {
    let mut out = BytesMut::new();
    Reply { close: true, ..Reply::text(408, "the request head did not arrive in time\n") }.encode(&mut out);
    out.freeze()
}

/// The tunnel connection failed before any byte of a response reached the visitor (502); closes.
pub fn tunnel_broke() -> Bytes {
    let mut out = BytesMut::new();
    let body = "the tunnel connection failed before a complete response arrived\n";
    Reply { close: true, ..Reply::text(502, body) }.encode(&mut out);
    out.freeze()
}

/// What the visitor gets when its exchange broke: a reply, unless part of a response already went out
/// (then only the close tells). `frame` is the visitor's own framing error, if that was the cause.
pub fn broken(frame: Option<FrameError>, response_started: bool) -> Option<Bytes> {
    (!response_started).then(|| frame.map_or_else(tunnel_broke, frame_error))
}

/// The client's answer to `request` when the origin cannot be reached (502); keeps the tunnel connection usable.
pub fn origin_unreachable(origin: &str, error: &str, request: &Head) -> Bytes {
    let head_only = request.method() == Some(Method::Head);
    let mut out = BytesMut::new();
    let body = format!("aether: the local service at {origin} is not reachable: {error}\n");
    Reply { head_only, ..Reply::text(502, &body) }.encode(&mut out);
    out.freeze()
}

/// Serialization without naming each type at the call site.
mod erased {
    /// A value that renders as JSON.
    pub trait Json {
        /// The JSON bytes.
        fn to_json(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            // Plain structs of numbers and strings: serialization cannot fail.
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests;
