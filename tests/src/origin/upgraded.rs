//! What the test origin does once it has answered `101`: raw bytes, by the request's path.
//!
//! | path | after the `101` |
//! | --- | --- |
//! | `/upgrade/last-word` | echoes; at the peer's end of stream writes `bye after <n> bytes\n` (all it received), then closes |
//! | `/upgrade/hang-up-first` | writes [`HANG_UP_LINE`], shuts down its sending side, then reads until the peer's end of stream ([`Origin::heard_after_hang_up`](super::Origin::heard_after_hang_up)) |
//! | anything else | echoes until the peer's end of stream, then closes |
//!
//! It models one side of a raw byte stream, with half-closes; no WebSocket framing.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

use super::State;

/// The line `/upgrade/hang-up-first` writes before it shuts down its sending side.
pub const HANG_UP_LINE: &str = "closing my side";

/// Serves an upgraded connection: `early` is what came after the request head; `out` and `inp`
/// are two handles of the same socket.
pub(super) fn serve(
    path: &str,
    early: Vec<u8>,
    out: &mut TcpStream,
    inp: &mut TcpStream,
    st: &State,
) -> io::Result<()> {
    match path {
        "/upgrade/hang-up-first" => {
            out.write_all(format!("{HANG_UP_LINE}\n").as_bytes())?;
            out.shutdown(Shutdown::Write)?;
            let mut heard = early;
            inp.read_to_end(&mut heard)?;
            *st.heard_after_hang_up.lock().unwrap_or_else(|e| e.into_inner()) = Some(heard);
            Ok(())
        }
        "/upgrade/last-word" => {
            let n = echo(early, out, inp)?;
            out.write_all(format!("bye after {n} bytes\n").as_bytes())?;
            out.shutdown(Shutdown::Write)
        }
        _ => {
            echo(early, out, inp)?;
            // The peer's close, mirrored (a handle of the socket stays open until the origin drops).
            out.shutdown(Shutdown::Write)
        }
    }
}

/// Echoes `early`, then every byte read, until end of stream; returns how many bytes came.
fn echo(early: Vec<u8>, out: &mut TcpStream, inp: &mut TcpStream) -> io::Result<usize> {
    out.write_all(&early)?;
    let mut total = early.len();
    let mut tmp = [0u8; 16 * 1024];
    loop {
        let n = inp.read(&mut tmp)?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
        out.write_all(&tmp[..n])?;
    }
}
