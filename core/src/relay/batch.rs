//! The pieces a pump decoded from one read, waiting for one vectored write.
//!
//! A fixed array, so holding them costs no allocation; a write that takes only part of them is
//! [`consume`](Batch::consume)d across pieces. It does not write anything itself.

use bytes::{Buf, Bytes};

/// Most pieces a [`Batch`] holds.
pub const BATCH: usize = 8;

/// The pieces a pump decoded from what it read, written together with one vectored write.
///
/// Fixed room, so a request costs no allocation for it: when it is full the adapter writes it out
/// before stepping again.
#[derive(Debug, Default)]
pub struct Batch {
    pieces: [Bytes; BATCH],
    len: usize,
}

impl Batch {
    /// Adds a piece; the caller writes the batch out first when it [`is_full`](Self::is_full).
    pub fn push(&mut self, piece: Bytes) {
        debug_assert!(!self.is_full(), "a full batch must be written out first");
        if let Some(slot) = self.pieces.get_mut(self.len) {
            *slot = piece;
            self.len += 1;
        }
    }

    /// No room for another piece.
    pub fn is_full(&self) -> bool {
        self.len == BATCH
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Points `out` at the pieces, in order; returns how many there are.
    pub fn slices<'a>(&'a self, out: &mut [std::io::IoSlice<'a>; BATCH]) -> usize {
        for (slot, piece) in out.iter_mut().zip(&self.pieces[..self.len]) {
            *slot = std::io::IoSlice::new(piece);
        }
        self.len
    }

    /// Drops the first `n` bytes (a vectored write took them): whole pieces go, the next one is
    /// advanced. More than the batch holds empties it.
    pub fn consume(&mut self, mut n: usize) {
        let mut gone = 0;
        for piece in &mut self.pieces[..self.len] {
            if n < piece.len() {
                piece.advance(n);
                break;
            }
            n -= piece.len();
            *piece = Bytes::new();
            gone += 1;
        }
        // The pieces left move to the front, in order; the emptied slots go behind them.
        self.pieces[..self.len].rotate_left(gone);
        self.len -= gone;
    }

    /// Drops the pieces (once written).
    pub fn clear(&mut self) {
        for piece in &mut self.pieces[..self.len] {
            *piece = Bytes::new();
        }
        self.len = 0;
    }
}
