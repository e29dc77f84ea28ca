//! One deflate stream, continued by a new deflate state at any bit position.
//!
//! A deflate stream (RFC 1951) is a sequence of bits. A deflate state writes whole bytes and keeps
//! the last few bits of its stream (up to 7) to itself until it writes more. When the codec drops a
//! state (hibernation) and a new one continues the stream, the new state starts on a byte boundary
//! of its own output, while the stream it continues may end mid-byte. Padding the stream to a byte
//! boundary costs an empty stored block (about 5 bytes) per sleep; zlib's `deflatePrime` would
//! start the new state mid-byte instead, but zlib-rs's safe API has no such call. This module does
//! what `deflatePrime` would, with the safe API:
//!
//! - Where the old state stopped: zlib does not say how many bits it holds, but after a partial
//!   flush its stream ends with an empty fixed-code block, the bits `0` (not final), `1`, `0`
//!   (fixed codes) and the 7-bit end-of-block code `0000000`. Its `1` is the last set bit of
//!   everything written, and the stream ends 8 bits after it; the bits zlib holds (at most 7) are
//!   the tail of that end-of-block code, zeros. [`Splicer::held_after_partial_flush`] reads the
//!   end off the output. The [`Splicer`] then keeps the stream's unfinished last byte.
//! - Starting the new state mid-byte: a fresh fixed-code state given a few bytes it then discards,
//!   each a 9-bit literal, and ended with a block flush, stands at a bit offset of our choosing
//!   (see [`prefix_for`]). Its output so far is thrown away, and the window it primes with then
//!   puts those bytes out of reach: with a full window of history in front of the next input,
//!   deflate can refer back at most a window minus 262 bytes, and the discarded bytes lie before
//!   the whole window. The first byte the state writes next starts with those discarded bits; the
//!   splicer puts the stream's unfinished byte in their place, and everything after passes
//!   through untouched: the new state's byte boundaries are the stream's.
//! - A young stream (less than a window of history) cannot hide the discarded bytes that way, so
//!   it is padded to a byte instead: by a sync flush when it falls asleep, or, if its last flush
//!   already showed where it stopped, by the cheapest empty blocks the splicer can write
//!   ([`Splicer::align`]) when it wakes.

use bytes::{BufMut, BytesMut};

use crate::error::CompressError;

/// The final, empty fixed-code block: BFINAL = 1, BTYPE = 01 (fixed codes), then the 7-bit
/// end-of-block code, as 10 bits in the order they are written (least significant first).
const FINAL_EMPTY_BLOCK_BITS: (u32, u8) = (0b00_0000_0011, 10);

/// An empty fixed-code block that is not final: BFINAL = 0, BTYPE = 01, end-of-block; 10 bits.
const EMPTY_FIXED_BLOCK_BITS: (u32, u8) = (0b00_0000_0010, 10);

/// The header of a stored block that is not final: BFINAL = 0, BTYPE = 00, 3 bits; padding to a
/// byte boundary and the lengths of an empty block (LEN = 0, NLEN = 0xffff) follow.
const STORED_BLOCK_HEADER_BITS: (u32, u8) = (0, 3);
const EMPTY_STORED_BLOCK_LENGTHS: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The first of the bytes a new state is given and discards: bytes 144..=255 have 9-bit fixed
/// codes (RFC 1951 §3.2.6), and these eight are distinct, so deflate finds no match among them.
const PREFIX_FIRST_BYTE: u8 = 0x90;

/// The bytes that, compressed alone by a fresh fixed-code state and ended with a block flush,
/// leave it `offset` (1..=7) bits into a byte: a block of `n` 9-bit literals is 3 + 9n + 7 bits.
pub(crate) fn prefix_for(offset: u8) -> Vec<u8> {
    // (10 + 9n) mod 8 = (2 + n) mod 8, with n in 1..=8.
    let n = match (offset + 6) % 8 {
        0 => 8,
        n => n,
    };
    (0..n).map(|i| PREFIX_FIRST_BYTE + i).collect()
}

/// What a fresh fixed-code state writes for [`prefix_for`]`(offset)` ended with a block flush:
/// the whole bytes (the rest, `offset` end-of-block bits, stays in the state).
pub(crate) fn prefix_output(offset: u8) -> Vec<u8> {
    let mut writer = Splicer::default();
    let mut out = BytesMut::new();
    // BFINAL = 0, BTYPE = 01.
    writer.push(0b010, 3, &mut out);
    for byte in prefix_for(offset) {
        // Codes 144..=255 are 110010000 + (byte - 144), 9 bits, sent most significant bit first.
        let code = 0b1_1001_0000 + u32::from(byte - 144);
        writer.push(code.reverse_bits() >> (32 - 9), 9, &mut out);
    }
    // End of block: seven zeros, of which the last `offset` stay in the state.
    writer.push(0, 7, &mut out);
    debug_assert_eq!(writer.pending, offset);
    out.to_vec()
}

/// Sits between a deflate state's output and the stream's output; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Splicer {
    /// Stream bits not written yet (the low `pending` bits), fewer than 8 between calls.
    acc: u32,
    pending: u8,
    /// The current state stands `pending` bits into a byte (it was primed there): the low
    /// `pending` bits of the next byte it writes are to be replaced by the ones here.
    merge: bool,
    /// The last nonzero byte the current state wrote, and how many bytes it wrote after it: where
    /// its last set bit is.
    last_set: u8,
    bytes_after_last_set: usize,
}

impl Splicer {
    /// Bits of the stream that wait here for the next state (0 to 7).
    pub(crate) fn pending(&self) -> u8 {
        self.pending
    }

    /// Writes `chunk`, output of the current deflate state, to `out`.
    #[inline]
    pub(crate) fn write(&mut self, chunk: &[u8], out: &mut BytesMut) {
        let Some((&first, rest)) = chunk.split_first() else {
            return;
        };
        match chunk.iter().rposition(|&b| b != 0) {
            Some(i) => {
                self.last_set = chunk[i];
                self.bytes_after_last_set = chunk.len() - 1 - i;
            }
            None => self.bytes_after_last_set += chunk.len(),
        }
        if !self.merge {
            out.extend_from_slice(chunk);
            return;
        }
        // The state's first byte: its low bits are the end of the discarded prefix.
        let mask = (1u32 << self.pending) - 1;
        out.put_u8(((u32::from(first) & !mask) | (self.acc & mask)) as u8);
        out.extend_from_slice(rest);
        self.merge = false;
        self.acc = 0;
        self.pending = 0;
    }

    /// Appends `count` (at most 16) bits of `bits`, least significant first.
    fn push(&mut self, bits: u32, count: u8, out: &mut BytesMut) {
        self.acc |= bits << self.pending;
        self.pending += count;
        while self.pending >= 8 {
            out.put_u8(self.acc as u8);
            self.acc >>= 8;
            self.pending -= 8;
        }
    }

    /// How many bits the current state holds after a partial flush, read off its output (see the
    /// module docs). An error if the output does not end as a partial flush ends.
    pub(crate) fn held_after_partial_flush(&self) -> Result<u8, CompressError> {
        let unexpected = || {
            CompressError::backend(Some(
                "a partial flush did not end with an empty fixed-code block",
            ))
        };
        if self.last_set == 0 {
            return Err(unexpected());
        }
        // Bits written after the last set bit; the stream ends 8 bits after it.
        let top = 7 - self.last_set.leading_zeros() as usize;
        let after = (7 - top) + 8 * self.bytes_after_last_set;
        match 8usize.checked_sub(after) {
            Some(held) if held <= 7 => Ok(held as u8),
            _ => Err(unexpected()),
        }
    }

    /// The current state is dropped holding `held` bits (zeros, the end of its last block): they
    /// are the stream's now, written to `out` once they make a byte.
    pub(crate) fn end_state(&mut self, held: u8, out: &mut BytesMut) {
        debug_assert!(!self.merge, "a state ended before it wrote anything");
        self.push(0, held, out);
        self.last_set = 0;
        self.bytes_after_last_set = 0;
    }

    /// A new state primed `pending` bits into a byte (see [`prefix_for`]) takes over: its first
    /// byte will carry the bits waiting here.
    pub(crate) fn start_primed_state(&mut self) {
        self.merge = self.pending > 0;
    }

    /// Between two states: writes empty blocks that bring the stream to a byte boundary, so that
    /// the next state's output needs nothing from here. Empty fixed-code blocks (10 bits each)
    /// when that is possible, else an empty stored block.
    pub(crate) fn align(&mut self, out: &mut BytesMut) {
        if self.pending % 2 == 0 {
            while self.pending != 0 {
                let (bits, count) = EMPTY_FIXED_BLOCK_BITS;
                self.push(bits, count, out);
            }
        } else {
            let (bits, count) = STORED_BLOCK_HEADER_BITS;
            self.push(bits, count, out);
            self.pad(out);
            out.extend_from_slice(&EMPTY_STORED_BLOCK_LENGTHS);
        }
    }

    /// Ends the deflate stream, no state being left: a final empty block, padded to a byte.
    pub(crate) fn finish(&mut self, out: &mut BytesMut) {
        let (bits, count) = FINAL_EMPTY_BLOCK_BITS;
        self.push(bits, count, out);
        self.pad(out);
    }

    /// Writes the bits waiting here padded with zeros to a byte.
    fn pad(&mut self, out: &mut BytesMut) {
        if self.pending > 0 {
            out.put_u8(self.acc as u8);
            self.acc = 0;
            self.pending = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_flush_shows_how_many_bits_the_state_holds() {
        // A fresh state's partial flush with nothing in it is just the empty block: `0 1 0`
        // and seven zeros, 10 bits: one byte out (0b0000_0010), two bits held.
        let mut splicer = Splicer::default();
        let mut out = BytesMut::new();
        splicer.write(&[0x02], &mut out);
        assert_eq!(splicer.held_after_partial_flush().unwrap(), 2);
        // After data: the block's `1` in the top bit of a byte, the rest in the next byte.
        splicer.write(&[0xab, 0x80, 0x00], &mut out);
        assert_eq!(splicer.held_after_partial_flush().unwrap(), 0);
        // Output that cannot be the end of a partial flush is an error, not a guess.
        let mut splicer = Splicer::default();
        splicer.write(&[0x80, 0, 0], &mut out);
        assert!(splicer.held_after_partial_flush().is_err());
        assert!(Splicer::default().held_after_partial_flush().is_err());
    }

    #[test]
    fn the_prefix_leaves_a_state_at_each_offset() {
        for offset in 1..=7u8 {
            let prefix = prefix_for(offset);
            assert!((1..=8).contains(&prefix.len()));
            let bits = 3 + 9 * prefix.len() + 7;
            assert_eq!(bits % 8, usize::from(offset));
            assert_eq!(prefix_output(offset).len(), bits / 8);
        }
    }

    #[test]
    fn alignment_and_the_final_block_are_valid_deflate() {
        use std::io::Read;
        // A stored block "hi" written by hand, then `pending` odd or even bits of an empty fixed
        // block, aligned, then the end: all of it one valid raw deflate stream.
        for pending_blocks in 0..4 {
            let mut splicer = Splicer::default();
            let mut out = BytesMut::new();
            out.extend_from_slice(&[0x00, 0x02, 0x00, 0xfd, 0xff, b'h', b'i']);
            for _ in 0..pending_blocks {
                let (bits, count) = EMPTY_FIXED_BLOCK_BITS;
                splicer.push(bits, count, &mut out);
            }
            splicer.push(0, u8::try_from(pending_blocks % 2).unwrap(), &mut out);
            splicer.align(&mut out);
            assert_eq!(splicer.pending(), 0);
            splicer.finish(&mut out);
            let mut decoded = Vec::new();
            flate2::read::DeflateDecoder::new(&out[..])
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, b"hi", "{pending_blocks} empty blocks");
        }
    }
}
