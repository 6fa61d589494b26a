//! `head-rewrite`: the server's per-request HTTP work in core, timed alone: decode a request head,
//! rewrite it for the tunnel, decode the response head, rewrite it for the visitor.
//!
//! `cargo run --release -p aether-bench --bin head-rewrite`

use aether_core::http::rewrite::{
    Forwarding, Proto, TargetRewrite, rewrite_request, rewrite_response, visitor_keep_alive,
};
use aether_core::http::{Decoder, Frame};
use aether_core::limits::Limits;
use bytes::BytesMut;
use std::time::Instant;
fn main() {
    let req = b"GET /my-tunnel/hello?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\nAccept-Encoding: gzip\r\nX-Forwarded-For: 1.2.3.4\r\nConnection: keep-alive\r\nCookie: a=b\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nDate: now\r\nServer: x\r\nKeep-Alive: timeout=5\r\n\r\nhello";
    let limits = Limits::default();
    let n = 300_000;
    // Parsed and rewritten the way the server does for each proxied exchange.
    let t = Instant::now();
    let mut total = 0;
    for _ in 0..n {
        let mut dec = Decoder::request(&limits);
        let mut b = BytesMut::from(&req[..]);
        let Ok(Some(Frame::Head(h))) = dec.decode(&mut b) else { panic!("the request head does not parse") };
        let mut out = BytesMut::new();
        let info = rewrite_request(
            &h,
            &Forwarding {
                client: "10.0.0.1",
                proto: Proto::Http,
                target: TargetRewrite { skip: 10, lead_slash: false },
            },
            &mut out,
        );
        let mut rdec = Decoder::response(&limits, info);
        let mut rb = BytesMut::from(&resp[..]);
        let Ok(Some(Frame::Head(rh))) = rdec.decode(&mut rb) else {
            panic!("the response head does not parse")
        };
        let mut rout = BytesMut::new();
        rewrite_response(&rh, visitor_keep_alive(&info, &rh), &mut rout);
        total += out.len() + rout.len();
    }
    println!(
        "{:.0} ns per request+response parse and rewrite ({total})",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}
