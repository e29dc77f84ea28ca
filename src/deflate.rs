//! One raw deflate state (RFC 1951: no zlib or gzip wrapper) behind the few operations the codec
//! needs, over either backend.
//!
//! With `zlib-rs` (the default) the state is zlib-rs's own, driven through its safe API rather than
//! through flate2's `Compress`, for two reasons flate2 cannot serve: the strategy (fixed codes,
//! below), and the memory level: flate2 always asks for 8, and this crate uses [`MEMORY_LEVEL`] 7.
//! The memory level sizes only the buffers that collect a block's
//! symbols and its output (zlib-rs's hash table is fixed), so level 7 makes every state smaller
//! for blocks half as long: bulk output slightly larger, token streams (whose blocks end at every
//! flush anyway) byte for byte the same. Both are measured in `FIGURES.md` (busy-stream memory,
//! and output size against flate2).
//!
//! With only `miniz` the state is flate2's `Compress` over miniz_oxide, which has a fixed window
//! and memory use and cannot be primed with a dictionary.
//!
//! # Fixed codes and the cheapest flush
//!
//! A zlib-rs state can be created for [`Codes::Fixed`]: every block it emits uses the fixed
//! Huffman codes of RFC 1951 §3.2.6 (or is stored, for incompressible input). A stream whose
//! blocks are event-sized loses nothing by it (zlib picks fixed codes for such blocks anyway) and
//! gains the cheapest flush there is: a `Z_BLOCK` flush ends the block and holds back at most 7
//! bits, and since every block ends with the 7-bit fixed-code end-of-block symbol (a stored block
//! ends byte-aligned, holding nothing), those bits are never part of the data: everything so far
//! is decodable, as after a partial flush, without the partial flush's 10-bit empty block. With
//! dynamic codes the end-of-block symbol can be shorter than 7 bits, so the held bits could be the
//! tail of the last data symbol; a dynamic state therefore flushes with a partial flush.
//!
//! The stable zlib-rs API can turn a fixed-code state into a dynamic one only while it is fresh
//! (created or reset, nothing compressed yet), and never the other way. See the codec for which
//! streams get which.

use crate::error::CompressError;

/// zlib's `memLevel` for every deflate state this crate creates (zlib-rs backend; see the module
/// docs). zlib's default, and flate2's only choice, is 8.
#[cfg(feature = "zlib-rs")]
pub(crate) const MEMORY_LEVEL: i32 = 7;

/// How far a [`DeflateState::compress`] call flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Deflate decides what to emit.
    None,
    /// Ends the block (`Z_BLOCK`): everything so far is decodable only with [`Codes::Fixed`],
    /// whose held-back bits (at most 7) are end-of-block bits. How many are held is not known.
    Block,
    /// Ends the block and appends an empty fixed-code block (`Z_PARTIAL_FLUSH`, 10 bits):
    /// everything so far is decodable with any codes, at most 7 bits of that empty block are held
    /// back, and the output shows how many (`splice`'s module docs).
    Partial,
    /// Ends the block and appends an empty stored block (`00 00 ff ff`): decodable and
    /// byte-aligned.
    Sync,
    /// Ends the deflate stream.
    Finish,
}

/// Which Huffman codes a state's blocks use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codes {
    /// Always the fixed codes (or a stored block): the cheapest flush, and as small as dynamic
    /// codes for event-sized blocks; larger for blocks of KiB (19% at 2 KiB, `FIGURES.md#streams`).
    Fixed,
    /// Whichever is smaller per block, zlib's default.
    Dynamic,
}

/// What one [`DeflateState::compress`] call did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Progress {
    pub(crate) consumed: usize,
    pub(crate) produced: usize,
    /// The deflate stream is complete (only after [`Flush::Finish`]).
    pub(crate) ended: bool,
}

/// A raw deflate state.
pub(crate) struct DeflateState {
    #[cfg(feature = "zlib-rs")]
    inner: zlib_rs::Deflate,
    #[cfg(not(feature = "zlib-rs"))]
    inner: flate2::Compress,
    level: u32,
    codes: Codes,
    /// Nothing compressed since the state was created or reset: the codes can still change.
    fresh: bool,
}

#[cfg(feature = "zlib-rs")]
impl DeflateState {
    /// Whether [`set_dictionary`](Self::set_dictionary) primes the state (so a hibernated stream
    /// can wake with its window).
    pub(crate) const PRIMES: bool = true;

    /// Whether a [`Flush::Partial`] ends with an empty fixed-code block and holds at most 7 bits
    /// (so `splice` can read where the stream ends).
    pub(crate) const PARTIAL_FLUSH_SHOWS_END: bool = true;

    /// A new state at `level` (0..=9) with a window of `2^window_bits` bytes (9..=15).
    pub(crate) fn new(level: u32, window_bits: u8, codes: Codes) -> Self {
        let level = level.min(9);
        let config = zlib_rs::DeflateConfig {
            level: level as i32,
            // Negative: raw deflate, no zlib header (the codec writes the gzip framing).
            window_bits: -i32::from(window_bits.clamp(9, 15)),
            mem_level: MEMORY_LEVEL,
            strategy: match codes {
                Codes::Fixed => zlib_rs::Strategy::Fixed,
                Codes::Dynamic => zlib_rs::Strategy::Default,
            },
            ..zlib_rs::DeflateConfig::default()
        };
        Self {
            inner: zlib_rs::Deflate::new_with_config(config),
            level,
            codes,
            fresh: true,
        }
    }

    /// (input consumed, output produced) since the state was created or last reset.
    fn totals(&self) -> (u64, u64) {
        (self.inner.total_in(), self.inner.total_out())
    }

    /// One backend call; returns whether the deflate stream ended.
    fn call(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        flush: Flush,
    ) -> Result<bool, CompressError> {
        use zlib_rs::DeflateFlush;
        let flush = match flush {
            Flush::None => DeflateFlush::NoFlush,
            // Decodable with fixed codes only (see the module docs); the codec asks for it only
            // then.
            Flush::Block => DeflateFlush::Block,
            Flush::Partial => DeflateFlush::PartialFlush,
            Flush::Sync => DeflateFlush::SyncFlush,
            Flush::Finish => DeflateFlush::Finish,
        };
        match self.inner.compress(input, output, flush) {
            Ok(status) => Ok(matches!(status, zlib_rs::Status::StreamEnd)),
            Err(_) => Err(CompressError::backend(self.inner.error_message())),
        }
    }

    /// Makes the state ready for a new stream, keeping its memory.
    pub(crate) fn reset(&mut self) {
        self.inner.reset();
        self.fresh = true;
    }

    /// Changes the level, and makes the codes dynamic (zlib-rs's stable API sets the default
    /// strategy with the level). Only on a fresh state: created or reset, nothing compressed since.
    pub(crate) fn set_level(&mut self, level: u32) -> Result<(), CompressError> {
        match self.inner.set_level(level.min(9) as i32) {
            Ok(zlib_rs::Status::Ok) => {
                self.level = level.min(9);
                self.codes = Codes::Dynamic;
                Ok(())
            }
            _ => Err(CompressError::backend(self.inner.error_message())),
        }
    }

    /// Primes the state with the input that preceded it (fresh, or right after a block ends).
    /// Returns whether it did: if the backend refuses (it should not), the stream goes on without
    /// a dictionary, still correct, only larger for a while.
    pub(crate) fn set_dictionary(&mut self, dictionary: &[u8]) -> bool {
        self.inner.set_dictionary(dictionary).is_ok()
    }
}

#[cfg(not(feature = "zlib-rs"))]
impl DeflateState {
    /// miniz_oxide has no `set_dictionary`: a woken stream starts with an empty window.
    pub(crate) const PRIMES: bool = false;

    /// Not relied on with miniz_oxide: a stream is padded to a byte (a sync flush) before its
    /// state is dropped, and never spliced mid-byte.
    pub(crate) const PARTIAL_FLUSH_SHOWS_END: bool = false;

    /// A new state at `level`; miniz_oxide always uses a 32 KiB window, and dynamic codes
    /// (flate2 cannot ask for fixed ones).
    pub(crate) fn new(level: u32, _window_bits: u8, _codes: Codes) -> Self {
        Self {
            inner: flate2::Compress::new(flate2::Compression::new(level.min(9)), false),
            level: level.min(9),
            codes: Codes::Dynamic,
            fresh: true,
        }
    }

    /// (input consumed, output produced) since the state was created or last reset.
    fn totals(&self) -> (u64, u64) {
        (self.inner.total_in(), self.inner.total_out())
    }

    /// One backend call; returns whether the deflate stream ended.
    fn call(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        flush: Flush,
    ) -> Result<bool, CompressError> {
        use flate2::FlushCompress;
        let flush = match flush {
            Flush::None => FlushCompress::None,
            // flate2 has no block flush; a miniz_oxide state never has fixed codes, so the codec
            // never asks for one.
            Flush::Block | Flush::Partial => FlushCompress::Partial,
            Flush::Sync => FlushCompress::Sync,
            Flush::Finish => FlushCompress::Finish,
        };
        match self.inner.compress(input, output, flush) {
            Ok(status) => Ok(matches!(status, flate2::Status::StreamEnd)),
            Err(e) => Err(CompressError::backend(e.message())),
        }
    }

    /// Makes the state ready for a new stream, keeping its memory.
    pub(crate) fn reset(&mut self) {
        self.inner.reset();
        self.fresh = true;
    }

    /// Nothing to change: the pool hands a state only to responses of its own level, and packing a
    /// window (the other caller) is skipped with this backend.
    #[allow(clippy::unused_self)] // the zlib-rs build's signature
    pub(crate) fn set_level(&mut self, _level: u32) -> Result<(), CompressError> {
        Ok(())
    }

    /// Not supported by miniz_oxide (see [`PRIMES`](Self::PRIMES)).
    #[allow(clippy::unused_self)] // the zlib-rs build's signature
    pub(crate) fn set_dictionary(&mut self, _dictionary: &[u8]) -> bool {
        false
    }
}

impl DeflateState {
    /// Compresses from `input` into `output`, flushing as `flush` says.
    pub(crate) fn compress(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        flush: Flush,
    ) -> Result<Progress, CompressError> {
        self.fresh = false;
        let (in_before, out_before) = self.totals();
        let ended = self.call(input, output, flush)?;
        let (in_after, out_after) = self.totals();
        Ok(Progress {
            consumed: (in_after - in_before) as usize,
            produced: (out_after - out_before) as usize,
            ended,
        })
    }

    /// The level the state compresses at.
    pub(crate) fn level(&self) -> u32 {
        self.level
    }

    /// The codes the state's blocks use.
    pub(crate) fn codes(&self) -> Codes {
        self.codes
    }

    /// Switches the state to dynamic codes in place, which only a fresh state allows (see the
    /// module docs). Returns whether its codes are dynamic now.
    pub(crate) fn try_make_dynamic(&mut self) -> bool {
        if self.codes == Codes::Fixed && self.fresh {
            let _ = self.set_level(self.level);
        }
        self.codes == Codes::Dynamic
    }

    /// Compresses all of `input` into `out` (appending) and ends the deflate stream. `out` grows
    /// as needed; reserve the expected size beforehand to avoid regrowth.
    pub(crate) fn finish_into(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        let mut consumed = 0;
        loop {
            // Safe code cannot hand deflate uninitialised memory: the room is zeroed first.
            let start = out.len();
            if out.capacity() - start < 64 {
                out.reserve(input.len() / 4 + 64);
            }
            out.resize(out.capacity(), 0);
            let progress = self.compress(&input[consumed..], &mut out[start..], Flush::Finish);
            let produced = progress.as_ref().map_or(0, |p| p.produced);
            out.truncate(start + produced);
            let progress = progress?;
            consumed += progress.consumed;
            if progress.ended {
                return Ok(());
            }
            if progress.consumed == 0 && progress.produced == 0 && out.capacity() > out.len() {
                return Err(CompressError::stalled());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn inflate(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(raw)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn finish_into_round_trips_and_grows_past_a_too_small_reservation() {
        let input: Vec<u8> = (0..200_000u32)
            .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
            .collect();
        for reserved in [0, 16, 1 << 20] {
            let mut state = DeflateState::new(6, 15, Codes::Dynamic);
            let mut out = Vec::with_capacity(reserved);
            out.extend_from_slice(b"xy");
            state.finish_into(&input, &mut out).unwrap();
            assert_eq!(&out[..2], b"xy");
            assert_eq!(inflate(&out[2..]), input, "reserved {reserved}");
        }
    }

    #[test]
    fn partial_and_sync_flushes_make_everything_so_far_decodable() {
        let mut state = DeflateState::new(6, 15, Codes::Dynamic);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        for (i, flush) in [Flush::Partial, Flush::Sync, Flush::Partial]
            .into_iter()
            .enumerate()
        {
            let line = format!("line {i} of a stream\n");
            let p = state.compress(line.as_bytes(), &mut buf, flush).unwrap();
            assert_eq!(p.consumed, line.len());
            assert!(!p.ended);
            out.extend_from_slice(&buf[..p.produced]);
            let mut decoded = Vec::new();
            let _ = flate2::read::DeflateDecoder::new(&out[..]).read_to_end(&mut decoded);
            assert!(
                String::from_utf8_lossy(&decoded).ends_with(&line),
                "{flush:?}"
            );
        }
    }

    #[cfg(feature = "zlib-rs")]
    #[test]
    fn a_primed_state_refers_back_into_its_dictionary() {
        let text = b"a sentence long enough to be worth a back-reference, twice";
        let mut primed = DeflateState::new(6, 15, Codes::Dynamic);
        primed.set_dictionary(text);
        let mut cold = DeflateState::new(6, 15, Codes::Dynamic);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        primed.finish_into(text, &mut a).unwrap();
        cold.finish_into(text, &mut b).unwrap();
        assert!(
            a.len() + 20 < b.len(),
            "primed {} vs cold {}",
            a.len(),
            b.len()
        );
        let mut inflater = flate2::Decompress::new(false);
        inflater.set_dictionary(text).unwrap();
        let mut decoded = vec![0; text.len()];
        inflater
            .decompress(&a, &mut decoded, flate2::FlushDecompress::Finish)
            .unwrap();
        assert_eq!(&decoded[..], &text[..]);
    }
}
