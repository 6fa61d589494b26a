//! How much memory rewriting a head costs: one allocation for a typical head, sized close to what
//! it holds. A proxy rewrites every head it forwards, so a reallocation or a per-request `Vec`
//! there is paid on every request.
//!
//! Its own test binary because counting allocations needs a global allocator, which core itself
//! (`forbid(unsafe_code)`) cannot hold. Counts are per thread, so parallel tests do not disturb
//! each other. It does not measure time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use aether_core::http::rewrite::{Forwarding, Proto, TargetRewrite, rewrite_request, rewrite_response};
use aether_core::http::{Decoder, Frame, Head, Method, RequestInfo};
use aether_core::limits::Limits;
use bytes::BytesMut;

/// The system allocator, counting allocations made by the current thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call goes straight to `System`; the counter is a const-initialised thread-local
// `Cell`, which neither allocates nor re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const GET: RequestInfo = RequestInfo { method: Method::Get, upgrade: false, keep_alive: true };

fn head(request: bool, text: &str) -> Head {
    let limits = Limits::default();
    let mut dec = if request { Decoder::request(&limits) } else { Decoder::response(&limits, GET) };
    match dec.decode(&mut BytesMut::from(text)) {
        Ok(Some(Frame::Head(head))) => head,
        other => panic!("no head: {other:?}"),
    }
}

/// What a browser sends, `Connection` options included (they are looked up for every field).
const BROWSER_GET: &str = "GET /myapp/assets/app.js?v=3 HTTP/1.1\r\nHost: tunnel.example:8080\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0\r\n\
Accept: */*\r\nAccept-Language: en-GB,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n\
Referer: http://tunnel.example:8080/myapp/\r\nConnection: keep-alive, x-trace, x-debug\r\n\
X-Trace: 1\r\nX-Debug: 2\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n";

const ORIGIN_200: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/javascript\r\nContent-Length: 5120\r\n\
Cache-Control: max-age=3600\r\nETag: \"abc123\"\r\nConnection: keep-alive, x-internal\r\n\
X-Internal: yes\r\nKeep-Alive: timeout=5\r\nDate: Wed, 02 Dec 2026 12:00:00 GMT\r\n\r\n";

/// One allocation, and at most twice the bytes the rewritten head holds.
fn assert_one_tight_allocation(what: &str, rewrite: impl FnOnce(&mut BytesMut)) {
    let mut out = BytesMut::new();
    let n = allocations(|| rewrite(&mut out));
    assert_eq!(n, 1, "{what}: {n} allocations for a {}-byte head", out.len());
    assert!(out.capacity() <= 2 * out.len(), "{what}: {} bytes reserved for {}", out.capacity(), out.len());
}

#[test]
fn a_typical_request_head_is_rewritten_in_one_tight_allocation() {
    let head = head(true, BROWSER_GET);
    let fwd = Forwarding {
        client: "203.0.113.250",
        proto: Proto::Http,
        target: TargetRewrite { skip: "/myapp".len(), lead_slash: false },
    };
    assert_one_tight_allocation("request", |out| {
        rewrite_request(&head, &fwd, out);
    });
}

#[test]
fn a_minimal_request_from_a_long_address_still_fits_its_allocation() {
    // Nearly everything written is added by the proxy: the reserve must count the address in.
    let head = head(true, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let fwd = Forwarding {
        client: "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        proto: Proto::Https,
        target: TargetRewrite { skip: 0, lead_slash: false },
    };
    assert_one_tight_allocation("minimal request", |out| {
        rewrite_request(&head, &fwd, out);
    });
}

#[test]
fn a_typical_response_head_is_rewritten_in_one_tight_allocation() {
    let head = head(false, ORIGIN_200);
    assert_one_tight_allocation("response", |out| rewrite_response(&head, true, out));
}

#[test]
fn the_counter_sees_a_reallocation() {
    // The checks above mean something only if growing a buffer counts.
    let mut out = BytesMut::new();
    let n = allocations(|| {
        out.reserve(8);
        out.extend_from_slice(&[0; 64]);
    });
    assert_eq!(n, 2);
}

#[test]
fn a_reply_is_encoded_into_a_tight_buffer() {
    // The server's own answers (404, 503, status JSON): the buffer is sized for the reply, no more.
    let body = "tunnel offline: its client is not connected; try again shortly\n".repeat(2);
    let mut out = BytesMut::new();
    aether_core::http::encode::Reply::text(503, &body).encode(&mut out);
    assert!(out.len() > body.len());
    assert!(out.capacity() <= 2 * out.len(), "{} bytes reserved for {}", out.capacity(), out.len());
}
