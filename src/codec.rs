//! The gzip codec: bytes in, bytes out. No HTTP, no async.
//!
//! A gzip member (RFC 1952) is a fixed 10-byte header, a raw deflate stream (RFC 1951) and an 8-byte
//! trailer (CRC-32 and length of the input). We drive a raw deflate state ([`DeflateState`]: zlib-rs
//! at a smaller memory level, or miniz_oxide) and write the framing ourselves with `crc32fast`:
//! flate2's own gzip CRC is slow on small chunks in zlib-rs builds (measured when this codec was
//! written), and owning the framing lets a stream outlive its deflate state (hibernation, below).
//!
//! Invariants:
//! - `flush` emits anything only if input was written since the previous flush, so idle flushes
//!   cost nothing.
//! - After `flush` returns, every byte written so far can be decoded from the output so far.
//! - Compressed output is copied out of a fixed scratch buffer that was zeroed once; this avoids
//!   `compress_vec`, which zero-fills all spare capacity on every call.
//! - Small writes are staged and handed to deflate in blocks of at least [`STAGE_LEN`] bytes:
//!   deflate fed a few bytes at a time makes larger output, and runs slower, than when fed
//!   kilobytes at a time, even with no flush in between.
//!
//! Hibernation: after a flush the deflate stream is between blocks, so a brand-new raw deflate
//! state can continue it; the client's single inflater sees one continuous stream.
//! [`GzipEncoder::hibernate`] drops the deflate state (with its window and hash tables, the bulk
//! of a stream's memory) and keeps only the last window's worth of input; the next write builds a
//! new state primed with that input as its dictionary (`deflateSetDictionary`), so
//! back-references keep working and the ratio stays close to an uninterrupted stream. The CRC and
//! length live here, outside deflate, and simply continue.
//!
//! The new state must also continue at the right bit: the stream usually ends mid-byte. A stream
//! with a full window of history wakes there, at no cost in bytes (the [`Splicer`] and `splice`'s
//! module docs say how); a younger one is padded to a byte when it falls asleep (a sync flush's
//! empty stored block, about 5 bytes). Whatever a stream writes while falling asleep (the end of
//! its last block, or that padding) is held and goes out in front of its next bytes, or its end:
//! a stream that falls asleep sends nothing.
//!
//! Fixed codes for event streams: a stream's deflate state starts with fixed Huffman codes
//! ([`Codes::Fixed`]), whose flush is the cheapest there is (no empty block after the data: see
//! `deflate`'s module docs), and which are as small as dynamic codes for event-sized blocks. A
//! stream that turns out to make larger blocks switches to dynamic codes, which are smaller for blocks
//! of KiB (fixed codes make 1.19x the bytes at 2 KiB per flush: `FIGURES.md#streams`): in place while its state is fresh, or else by a sync flush and a
//! reset primed with the window (when hibernation keeps one), exactly as a hibernated stream wakes
//! (see [`FixedCodeAllowance`]).
//! Complete bodies always use dynamic codes.
//!
//! Padding (opt-in, [`EncoderSettings::padding`]): the header then carries an FEXTRA field (RFC
//! 1952 §2.3.1.1) holding one subfield `TP` of random length, so the length of every member varies
//! at random. Decoders skip the extra field; only its length matters, so it is zeros.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::{BufMut, BytesMut};

use crate::deflate::{Codes, DeflateState, Flush};
use crate::error::CompressError;
use crate::splice::{self, Splicer};

/// Size of the buffer the deflate stream writes into before the bytes are copied to the output.
/// It is resident for as long as the deflate state lives, so it is kept small: deflate output is
/// simply copied out of it as often as needed.
const SCRATCH_LEN: usize = 2 * 1024;

/// Writes smaller than this are collected before deflate sees them.
const STAGE_LEN: usize = 4 * 1024;

/// Largest input handed to one deflate call; large inputs compress faster in slices of this size.
const DEFLATE_SLICE: usize = 16 * 1024;

/// Bytes of input per flush that fixed codes may cost without losing to dynamic ones: on the
/// bench JSON flushed every 384 bytes fixed codes with their cheaper flush are 0.4% smaller, every
/// 512 bytes 2.6% larger, every 2 KiB 19% larger (`FIGURES.md#streams`).
const FIXED_CODES_BYTES_PER_FLUSH: usize = 512;

/// The most unused [`FIXED_CODES_BYTES_PER_FLUSH`] allowance a stream saves up: a token stream
/// that sends a few events in one flush keeps its fixed codes, while a long one that turns to
/// bulk output switches within 4 KiB.
const FIXED_CODES_MAX_ALLOWANCE: usize = 4 * 1024;

/// The gzip header: ID1 ID2 CM=deflate FLG=0 MTIME=0 (deterministic output); XFL and OS follow.
const HEADER_PREFIX: [u8; 8] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0];

/// FLG.FEXTRA (RFC 1952 §2.3.1): an extra field follows MTIME, XFL and OS.
const FEXTRA: u8 = 0x04;

/// The subfield id of the padding (RFC 1952 §2.3.1.1 SI1, SI2): `TP`, "tower-gzip padding". Not
/// registered; decoders skip subfields they do not know (and most skip the whole extra field).
pub(crate) const PADDING_SUBFIELD_ID: [u8; 2] = *b"TP";

/// The most padding a header can carry: XLEN (2 bytes) counts the 4-byte subfield header (SI1,
/// SI2, LEN) plus the data, so the data is at most `65535 - 4` bytes.
pub(crate) const MAX_PADDING: u16 = u16::MAX - 4;

/// A final, empty fixed-Huffman block (BFINAL=1, BTYPE=01, end-of-block): ends a byte-aligned
/// deflate stream without a deflate state.
const FINAL_EMPTY_BLOCK: [u8; 2] = [0x03, 0x00];

/// The gzip framing for an empty input: header, an empty final block, CRC 0, size 0.
///
/// Sent when a compressed response turns out to have no data, without allocating a compressor.
/// Clients accept it everywhere; an empty body under `Content-Encoding: gzip` is rejected by
/// some decoders (Python's `zlib` among them). With padding on, see
/// [`GzipEncoder::write_empty_member`].
pub(crate) const EMPTY_GZIP_MEMBER: [u8; 20] = [
    0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff, 0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// Deflate parameters chosen by the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EncoderSettings {
    /// 0 = stored, 1 = fastest, 9 = best.
    pub(crate) level: u32,
    /// Base-2 logarithm of the deflate window, 9..=15.
    pub(crate) window_bits: u8,
    /// Keep the last window of input so the deflate state can be dropped while idle.
    pub(crate) can_hibernate: bool,
    /// The header carries random padding of 0..=`padding` bytes (capped at [`MAX_PADDING`]);
    /// 0: no extra field at all.
    pub(crate) padding: u16,
}

impl Default for EncoderSettings {
    fn default() -> Self {
        Self {
            level: 6,
            window_bits: 15,
            can_hibernate: true,
            padding: 0,
        }
    }
}

impl EncoderSettings {
    fn level(&self) -> u32 {
        self.level.min(9)
    }

    fn window_bits(&self) -> u8 {
        self.window_bits.clamp(9, 15)
    }

    fn padding(&self) -> u16 {
        self.padding.min(MAX_PADDING)
    }

    /// RFC 1952 §2.3.1: XFL 2 = "maximum compression", 4 = "fastest algorithm".
    fn xfl(&self) -> u8 {
        match self.level() {
            9 => 2,
            1 => 4,
            _ => 0,
        }
    }

    /// Appends the gzip header: 10 bytes, plus the padding field when padding is on.
    fn write_header(&self, out: &mut impl BufMut) {
        let max = self.padding();
        if max == 0 {
            out.put_slice(&HEADER_PREFIX);
            out.put_slice(&[self.xfl(), 0xff]); // OS 255: unknown
            return;
        }
        self.write_padded_header(random_up_to(max), out);
    }

    /// Appends a header whose extra field holds `len` bytes of padding (`len <= MAX_PADDING`).
    fn write_padded_header(&self, len: u16, out: &mut impl BufMut) {
        debug_assert!(len <= MAX_PADDING);
        let mut prefix = HEADER_PREFIX;
        prefix[3] = FEXTRA;
        out.put_slice(&prefix);
        out.put_slice(&[self.xfl(), 0xff]);
        out.put_slice(&(4 + len).to_le_bytes()); // XLEN: the one subfield
        out.put_slice(&PADDING_SUBFIELD_ID);
        out.put_slice(&len.to_le_bytes()); // LEN
        out.put_bytes(0, usize::from(len));
    }

    /// The most bytes a header can take with these settings.
    fn max_header_len(&self) -> usize {
        match self.padding() {
            0 => 10,
            max => 16 + usize::from(max),
        }
    }
}

/// Compresses a whole body that is complete in one piece into one gzip member, in one deflate call
/// into one buffer: no staging, no remembered window (the body ends here, so it never hibernates),
/// no scratch copy, and one allocation for the output, sized from the input.
pub(crate) fn compress_whole(
    settings: EncoderSettings,
    pool: Option<&StatePool>,
    input: &[u8],
) -> Result<Vec<u8>, CompressError> {
    // deflate's worst case (stored blocks) is the input plus a few bytes per 16 KiB block; zlib's
    // deflateBound adds 1/8 + 1/64 for levels with lazy matching, which this covers too.
    let bound = input.len() + input.len() / 8 + input.len() / 64 + 64;
    let mut out = Vec::with_capacity(settings.max_header_len() + bound + 8);
    settings.write_header(&mut out);
    let mut compress = deflate_state(settings, pool, Codes::Dynamic);
    compress.finish_into(input, &mut out)?;
    if let Some(pool) = pool {
        pool.give(settings, compress);
    }
    out.extend_from_slice(&crc32fast::hash(input).to_le_bytes());
    out.extend_from_slice(&(input.len() as u32).to_le_bytes());
    Ok(out)
}

/// Reset deflate states kept for reuse. Allocating and zeroing a new state (several hundred KiB)
/// is a large part of what a small response costs; resetting a used one clears only its hash table.
/// Bounded: at most `max_idle` states wait here; more are freed. Only states of the layer's own
/// level and window are kept and handed out, so responses at another level (a handler's override)
/// never take the slots the layer's own responses reuse.
pub(crate) struct StatePool {
    idle: Mutex<Vec<DeflateState>>,
    max_idle: usize,
    level: u32,
    window_bits: u8,
    /// Deflate states held by streaming encoders right now (hibernating ones hold none): how much
    /// deflate memory the layer's streams hold, which the body's hibernation rule weighs.
    awake: AtomicUsize,
}

impl StatePool {
    pub(crate) fn new(max_idle: usize, settings: EncoderSettings) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            max_idle,
            level: settings.level(),
            window_bits: settings.window_bits(),
            awake: AtomicUsize::new(0),
        }
    }

    /// How many deflate states streaming encoders of this pool hold right now.
    pub(crate) fn awake(&self) -> usize {
        self.awake.load(Ordering::Relaxed)
    }

    fn serves(&self, settings: EncoderSettings) -> bool {
        settings.level() == self.level && settings.window_bits() == self.window_bits
    }

    /// How many reset states are waiting to be reused.
    pub(crate) fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DeflateState>> {
        // The vector stays consistent even if a holder panicked: take it.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A reset state, one with `codes` if there is one. (A fixed-code state can be made dynamic,
    /// not the other way round.)
    fn take(&self, settings: EncoderSettings, codes: Codes) -> Option<DeflateState> {
        if self.max_idle == 0 || !self.serves(settings) {
            return None;
        }
        let mut idle = self.lock();
        let at = idle.iter().rposition(|state| state.codes() == codes);
        match at {
            Some(at) => Some(idle.swap_remove(at)),
            None => idle.pop(),
        }
    }

    /// Takes back a state that is no longer needed. It is reset here, by the response that is
    /// done with it, not by the next one.
    fn give(&self, settings: EncoderSettings, mut state: DeflateState) {
        if !self.serves(settings) || self.max_idle == 0 {
            return;
        }
        if self.lock().len() >= self.max_idle {
            return;
        }
        state.reset();
        // (Packing a window may have changed it; a reset state always accepts a new level.)
        if state.level() != settings.level() && state.set_level(settings.level()).is_err() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push(state);
        }
    }
}

impl std::fmt::Debug for StatePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatePool")
            .field("idle", &self.idle())
            .field("max_idle", &self.max_idle)
            .field("awake", &self.awake())
            .finish()
    }
}

/// A deflate state for `settings`: a reset one from `pool` if it has one (with `codes` if it has
/// such a one), else a new one with `codes`. Asked for dynamic codes, it has them; asked for fixed
/// ones, it may have dynamic ones.
fn deflate_state(
    settings: EncoderSettings,
    pool: Option<&StatePool>,
    codes: Codes,
) -> DeflateState {
    let mut state = pool
        .and_then(|pool| pool.take(settings, codes))
        .unwrap_or_else(|| DeflateState::new(settings.level(), settings.window_bits(), codes));
    if codes == Codes::Dynamic {
        // A reset state is fresh: this cannot fail.
        let _ = state.try_make_dynamic();
    }
    state
}

/// A number uniform in `0..=max`, drawn afresh for every call, unpredictable without the key.
///
/// The key is std's [`RandomState`] (keyed SipHash; the key comes from the operating system's
/// random source, once per process); what it hashes is a per-process counter. Hashing distinct counter values
/// under a secret key gives values a client cannot predict or correlate, which is all padding
/// needs; it is not a vetted CSPRNG. The widening multiply maps the 64-bit hash onto `0..=max`
/// with a relative bias below `2^-48` (no modulo).
fn random_up_to(max: u16) -> u16 {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let hash = KEY.get_or_init(RandomState::new).hash_one(n);
    ((u128::from(hash) * (u128::from(max) + 1)) >> 64) as u16
}

/// A streaming gzip encoder.
pub(crate) struct GzipEncoder {
    settings: EncoderSettings,
    /// `None` while hibernating.
    deflater: Option<Deflater>,
    pool: Option<Arc<StatePool>>,
    /// What deflate has been given so far.
    tally: Tally,
    /// The header goes out with the first write, so an encoder that is never fed costs no bytes.
    header_written: bool,
    /// Input has been written since the last flush.
    dirty: bool,
    /// Between the deflate state's output and `out`: lets a new state continue the stream at any
    /// bit position.
    splicer: Splicer,
    /// While hibernating: what the stream wrote as it fell asleep (the end of its last block, a
    /// byte or two), not yet emitted; it goes out in front of whatever the stream emits next.
    held_output: Option<Box<[u8]>>,
}

/// The input as deflate has seen it: the gzip trailer's CRC and length, and the window that primes
/// a new deflate state. Counted when bytes are handed to deflate, a staged block at a time, not
/// per write: a stream written 7 bytes at a time pays for one CRC update and one window copy per
/// 4 KiB block instead of one per write.
struct Tally {
    crc: crc32fast::Hasher,
    /// Input length modulo 2^32: gzip's ISIZE field is defined that way (RFC 1952 §2.3.1).
    input_len: u32,
    /// The last window's worth of input, when hibernation is enabled.
    history: Option<Window>,
}

impl Tally {
    fn consume(&mut self, input: &[u8]) {
        self.crc.update(input);
        self.input_len = self.input_len.wrapping_add(input.len() as u32);
        if let Some(history) = &mut self.history {
            history.remember(input);
        }
    }
}

/// The deflate state and its buffers: everything hibernation drops.
struct Deflater {
    compress: DeflateState,
    /// Counts this state among its pool's awake states until the deflater is dropped.
    _awake: Option<AwakeState>,
    /// Small writes not yet given to deflate (nor counted in the [`Tally`]). Always empty after a
    /// flush, so hibernation never drops input.
    staged: Vec<u8>,
    scratch: Box<[u8]>,
    allowance: FixedCodeAllowance,
    /// How many bits the state holds back after its last flush (zeros), if known: not after a
    /// block flush.
    held: Option<u8>,
}

/// How much more input a fixed-code state may take before the next flush. Fixed codes pay while a
/// stream's blocks are event-sized; each flush earns [`FIXED_CODES_BYTES_PER_FLUSH`] (up to
/// [`FIXED_CODES_MAX_ALLOWANCE`]), each byte handed to deflate spends one, and a stream that runs
/// out switches to dynamic codes for good.
struct FixedCodeAllowance(usize);

impl FixedCodeAllowance {
    fn new() -> Self {
        Self(FIXED_CODES_BYTES_PER_FLUSH)
    }

    /// Spends `len` bytes; `false` if the allowance does not cover them.
    fn spend(&mut self, len: usize) -> bool {
        match self.0.checked_sub(len) {
            Some(left) => {
                self.0 = left;
                true
            }
            None => false,
        }
    }

    fn earn(&mut self) {
        self.0 = (self.0 + FIXED_CODES_BYTES_PER_FLUSH).min(FIXED_CODES_MAX_ALLOWANCE);
    }
}

impl GzipEncoder {
    /// Creates an encoder. Out-of-range settings are clamped (level to 9, window bits to 9..=15).
    /// Deflate states come from `pool` when it has one, and go back to it when the encoder is
    /// done with them (at the end, and when it hibernates).
    pub(crate) fn new(settings: EncoderSettings, pool: Option<Arc<StatePool>>) -> Self {
        Self {
            settings,
            deflater: Some(Deflater::new(settings, pool.as_ref())),
            pool,
            tally: Tally {
                crc: crc32fast::Hasher::new(),
                input_len: 0,
                // Without `set_dictionary` (miniz_oxide) a window could never prime anything.
                history: (settings.can_hibernate && DeflateState::PRIMES)
                    .then(|| Window::new(1 << settings.window_bits())),
            },
            header_written: false,
            dirty: false,
            splicer: Splicer::default(),
            held_output: None,
        }
    }

    /// Compresses `input`, appending whatever the deflate stream emits to `out`.
    ///
    /// Deflate keeps most of the input internally until a flush; `out` may receive nothing.
    pub(crate) fn write(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), CompressError> {
        if input.is_empty() {
            return Ok(());
        }
        self.write_header_once(out);
        self.dirty = true;
        // Waking: the dictionary is all the input so far (a hibernating stream has none staged).
        if self.deflater.is_none() {
            self.release_held_output(out);
            let deflater = Deflater::wake(
                self.settings,
                self.pool.as_ref(),
                self.tally.history.as_mut(),
                input.len() > FIXED_CODES_BYTES_PER_FLUSH,
                &mut self.splicer,
                out,
            );
            self.deflater = Some(deflater);
        }
        match &mut self.deflater {
            Some(deflater) => deflater.write(input, &mut self.tally, &mut self.splicer, out),
            None => Err(CompressError::stalled()), // created just above
        }
    }

    /// Stages a small non-empty write if that is all it takes: the encoder holds a deflate state,
    /// has written its header, and `input` fits in the staging buffer. Nothing is compressed and
    /// nothing is emitted. Returns `false`, having done nothing, otherwise ([`write`](Self::write)
    /// then does the rest). The hot path of a body made of tiny frames: one check and a copy per
    /// frame instead of the full write path.
    #[inline]
    pub(crate) fn try_stage(&mut self, input: &[u8]) -> bool {
        match &mut self.deflater {
            Some(deflater) if self.header_written => {
                let staged = deflater.staged.len() + input.len() < STAGE_LEN;
                if staged {
                    deflater.staged.extend_from_slice(input);
                    self.dirty = true;
                }
                staged
            }
            _ => false,
        }
    }

    /// Flushes the deflate stream so everything written so far is decodable from `out`.
    ///
    /// Not a sync flush, whose empty stored block and `00 00 ff ff` cost about 4 bytes more per
    /// flush (most of a token event's cost): with fixed codes the block is just ended (`Z_BLOCK`;
    /// the bits held back are end-of-block bits, see the module docs), with dynamic codes it is
    /// ended and followed by an empty fixed-code block (a partial flush, 10 bits).
    ///
    /// Does nothing (and emits nothing) if no input arrived since the previous flush.
    pub(crate) fn flush(&mut self, out: &mut BytesMut) -> Result<(), CompressError> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(deflater) = &mut self.deflater {
            deflater.flush(&mut self.tally, &mut self.splicer, out)?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Ends the deflate stream and appends the gzip trailer. The encoder must not be used afterwards.
    pub(crate) fn finish(&mut self, out: &mut BytesMut) -> Result<(), CompressError> {
        self.write_header_once(out);
        match &mut self.deflater {
            Some(deflater) => deflater.finish(&mut self.tally, &mut self.splicer, out)?,
            // Hibernating: every block is ended, so a final empty block ends the stream.
            None => {
                self.release_held_output(out);
                self.splicer.finish(out);
            }
        }
        if let (Some(deflater), Some(pool)) = (self.deflater.take(), &self.pool) {
            pool.give(self.settings, deflater.compress);
        }
        self.tally.history = None;
        out.extend_from_slice(&self.tally.crc.clone().finalize().to_le_bytes());
        out.extend_from_slice(&self.tally.input_len.to_le_bytes());
        self.dirty = false;
        Ok(())
    }

    /// Drops the deflate state if everything written has been flushed and hibernation is enabled.
    /// Returns whether the encoder is hibernating afterwards. Emits nothing.
    ///
    /// The splicer takes over the bits the state holds back, so the next state can continue the
    /// stream wherever it ends. If the state's last flush was a block flush, which does not show
    /// how many bits it holds, a partial flush (an empty fixed-code block, 10 bits) does. What the
    /// stream writes as it falls asleep is held and goes out in front of its next output (see the
    /// module docs).
    pub(crate) fn hibernate(&mut self) -> Result<bool, CompressError> {
        if self.dirty || !self.settings.can_hibernate {
            return Ok(self.is_hibernating());
        }
        if let Some(mut deflater) = self.deflater.take() {
            let mut written = BytesMut::new();
            // Only a stream with a full window can wake mid-byte (see `splice`): it learns where
            // it stopped. Any other is padded to a byte: here, unless its last flush showed where
            // it stopped (then the splicer pads it when it wakes).
            let mid_byte = self.tally.history.as_ref().is_some_and(Window::is_full);
            let held = match deflater.held_bits(mid_byte, &mut self.splicer, &mut written) {
                Ok(held) => held,
                Err(e) => {
                    self.deflater = Some(deflater);
                    return Err(e);
                }
            };
            self.splicer.end_state(held, &mut written);
            if !written.is_empty() {
                self.held_output = Some(Box::from(&written[..]));
            }
            // The state is about to go: its last use is to pack the window for the sleep.
            if let Some(history) = &mut self.tally.history {
                history.pack(&mut deflater.compress);
            }
            if let Some(pool) = &self.pool {
                pool.give(self.settings, deflater.compress);
            }
        }
        Ok(true)
    }

    /// Appends a whole gzip member for an empty input (header, an empty final block, CRC 0, size
    /// 0) without a deflate state: [`EMPTY_GZIP_MEMBER`], or with padding when it is on.
    pub(crate) fn write_empty_member(settings: EncoderSettings, out: &mut BytesMut) {
        if settings.padding() == 0 {
            out.extend_from_slice(&EMPTY_GZIP_MEMBER);
            return;
        }
        settings.write_header(out);
        out.extend_from_slice(&FINAL_EMPTY_BLOCK);
        out.extend_from_slice(&[0; 8]);
    }

    /// Whether the deflate state is currently dropped.
    pub(crate) fn is_hibernating(&self) -> bool {
        self.deflater.is_none()
    }

    /// Emits what [`hibernate`](Self::hibernate) held back, if anything: before anything else
    /// the stream emits after waking, and before its end.
    fn release_held_output(&mut self, out: &mut BytesMut) {
        if let Some(held) = self.held_output.take() {
            out.extend_from_slice(&held);
        }
    }

    fn write_header_once(&mut self, out: &mut BytesMut) {
        if !self.header_written {
            self.header_written = true;
            self.settings.write_header(out);
        }
    }
}

/// The last `capacity` bytes of input, in a ring allocated once, at its full size, on the first
/// write: a busy stream holds exactly one window of history, never a growing buffer. Until the
/// ring is full it is filled by appending, so its memory is touched (made resident) only as input
/// arrives: a young stream does not pay for a whole window of zeros.
///
/// While the stream hibernates the window is kept packed: deflated (level 1) into a buffer of
/// just its compressed size, a few KiB for typical JSON or SSE text instead of the whole window,
/// and inflated again when the stream wakes, byte for byte, so the new deflate state is primed
/// exactly as it would have been.
struct Window {
    /// The remembered bytes: oldest first while filling; once full (`len() == capacity`), a
    /// ring whose oldest byte is at `head`.
    buf: Vec<u8>,
    capacity: usize,
    /// The oldest byte, once the ring is full (0 while filling).
    head: usize,
    /// How many bytes are remembered (also while packed, when `buf` is empty).
    len: usize,
    /// The `len` remembered bytes, oldest first, as a raw deflate stream, while `buf` is empty.
    packed: Option<Box<[u8]>>,
}

impl Window {
    fn new(capacity: usize) -> Self {
        Self {
            buf: Vec::new(),
            capacity,
            head: 0,
            len: 0,
            packed: None,
        }
    }

    fn remember(&mut self, input: &[u8]) {
        if input.is_empty() {
            return;
        }
        self.unpack();
        if self.buf.capacity() < self.capacity {
            self.buf.reserve_exact(self.capacity - self.buf.len());
        }
        let input = &input[input.len().saturating_sub(self.capacity)..];
        let room = self.capacity - self.buf.len();
        let (fill, rest) = input.split_at(room.min(input.len()));
        self.buf.extend_from_slice(fill);
        if !rest.is_empty() {
            // Full: overwrite the oldest bytes.
            let first = rest.len().min(self.capacity - self.head);
            self.buf[self.head..self.head + first].copy_from_slice(&rest[..first]);
            let wrapped = &rest[first..];
            self.buf[..wrapped.len()].copy_from_slice(wrapped);
            self.head = (self.head + rest.len()) % self.capacity;
        }
        self.len = self.buf.len();
    }

    /// A whole window is remembered.
    fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    /// The remembered bytes, oldest first, as one slice (rotates the ring in place; rare: only
    /// when a hibernated stream wakes).
    fn contiguous(&mut self) -> &[u8] {
        self.unpack();
        if self.head != 0 {
            self.buf.rotate_left(self.head);
            self.head = 0;
        }
        &self.buf[..]
    }
}

impl Window {
    /// Packs the window with `compress`, a deflate state that is no longer needed (it is reset
    /// and reused, so packing allocates only the packed bytes). Keeps the window as it is if
    /// packing would not save memory or fails.
    #[cfg(feature = "zlib-rs")]
    fn pack(&mut self, compress: &mut DeflateState) {
        if self.packed.is_some() || self.len == 0 {
            return;
        }
        let len = self.len;
        // In order, and holding only what it remembers (not a whole window's allocation), even
        // if packing fails or is not worth it.
        self.contiguous();
        self.buf.shrink_to_fit();
        compress.reset();
        // Level 1 would make a fixed-code state dynamic for good (see `deflate`): those pack at
        // their own level, keeping their codes for the next stream.
        if compress.codes() == Codes::Dynamic && compress.set_level(1).is_err() {
            return;
        }
        let mut packed = Vec::with_capacity(len / 2 + 64);
        // Not worth it once the packed window nears the window's own size.
        if compress.finish_into(&self.buf, &mut packed).is_err() || packed.len() >= len * 3 / 4 {
            return;
        }
        self.packed = Some(packed.into_boxed_slice());
        self.buf = Vec::new();
        self.head = 0;
    }

    /// Without `set_dictionary` (miniz_oxide), a new state cannot be primed: the window would
    /// never be used again, so it is dropped.
    #[cfg(not(feature = "zlib-rs"))]
    fn pack(&mut self, _compress: &mut DeflateState) {
        self.buf = Vec::new();
        self.head = 0;
        self.len = 0;
    }

    /// Inflates a packed window back into the ring. A packed window that does not inflate to its
    /// length (it always does) is dropped: the stream goes on unprimed, correct but larger.
    fn unpack(&mut self) {
        let Some(packed) = self.packed.take() else {
            return;
        };
        let mut buf = Vec::with_capacity(self.capacity);
        buf.resize(self.len, 0);
        let mut inflate = flate2::Decompress::new(false);
        let inflated = inflate.decompress(&packed, &mut buf, flate2::FlushDecompress::Finish);
        if matches!(inflated, Ok(flate2::Status::StreamEnd))
            && inflate.total_out() as usize == self.len
        {
            // Packed oldest first: the ring starts over in order.
            self.buf = buf;
            self.head = 0;
        } else {
            self.len = 0;
            self.head = 0;
        }
    }

    /// Heap bytes held by the window right now.
    #[cfg(all(test, feature = "zlib-rs"))]
    fn held(&self) -> usize {
        self.buf.capacity() + self.packed.as_ref().map_or(0, |p| p.len())
    }
}

/// One deflate state held by a streaming encoder, counted in [`StatePool::awake`] while it lives.
struct AwakeState(Arc<StatePool>);

impl AwakeState {
    fn new(pool: &Arc<StatePool>) -> Self {
        pool.awake.fetch_add(1, Ordering::Relaxed);
        Self(pool.clone())
    }
}

impl Drop for AwakeState {
    fn drop(&mut self) {
        self.0.awake.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Deflater {
    fn new(settings: EncoderSettings, pool: Option<&Arc<StatePool>>) -> Self {
        // (miniz_oxide cannot be asked for fixed codes: its states are always dynamic.)
        let compress = deflate_state(settings, pool.map(Arc::as_ref), Codes::Fixed);
        Self {
            compress,
            _awake: pool.map(AwakeState::new),
            staged: Vec::new(),
            scratch: vec![0; SCRATCH_LEN].into_boxed_slice(),
            allowance: FixedCodeAllowance::new(),
            held: Some(0),
        }
    }

    /// A state for a stream waking from hibernation: primed with the window, and standing where
    /// the stream stopped, to the bit. When the stream stopped mid-byte, the state starts that
    /// far into a byte if the window is full, else the splicer pads the stream to a byte first
    /// (see `splice`).
    ///
    /// `bulk`: the first write alone spends the fixed-code allowance, so the state gets dynamic
    /// codes while it is fresh (a switch later would cost a sync flush and a second priming).
    fn wake(
        settings: EncoderSettings,
        pool: Option<&Arc<StatePool>>,
        history: Option<&mut Window>,
        bulk: bool,
        splicer: &mut Splicer,
        out: &mut BytesMut,
    ) -> Self {
        let mut deflater = Self::new(settings, pool);
        if bulk {
            let _ = deflater.compress.try_make_dynamic();
        }
        let offset = splicer.pending();
        let dictionary = history.map_or(&[][..], Window::contiguous);
        // Only a full window puts the discarded bytes out of deflate's reach. What was unpacked
        // counts: a window that failed to unpack is empty.
        let full = dictionary.len() == 1 << settings.window_bits();
        let mut mid_byte = offset > 0 && full && deflater.start_at(offset);
        if !dictionary.is_empty() && !deflater.compress.set_dictionary(dictionary) && mid_byte {
            // Unprimed, the discarded bytes would be within deflate's reach: start over, padded.
            deflater.compress.reset();
            deflater.compress.set_dictionary(dictionary);
            mid_byte = false;
        }
        if offset > 0 && !mid_byte {
            splicer.align(out);
        }
        splicer.start_primed_state();
        deflater
    }

    /// Puts the fresh state `offset` bits into a byte: compresses the bytes `splice::prefix_for`
    /// gives, ended with a block flush, checks that the state wrote exactly what that takes, and
    /// discards its output. If it wrote anything else (another backend, level 0's stored blocks)
    /// the state is reset and `false` returned.
    fn start_at(&mut self, offset: u8) -> bool {
        if !DeflateState::PARTIAL_FLUSH_SHOWS_END {
            return false;
        }
        let prefix = splice::prefix_for(offset);

        let started = self
            .compress
            .compress(&prefix, &mut self.scratch, Flush::Block);
        let exact = started.is_ok_and(|progress| {
            progress.consumed == prefix.len()
                && self.scratch[..progress.produced] == splice::prefix_output(offset)[..]
        });
        if !exact {
            self.compress.reset();
        }
        exact
    }

    fn write(
        &mut self,
        input: &[u8],
        tally: &mut Tally,
        splicer: &mut Splicer,
        out: &mut BytesMut,
    ) -> Result<(), CompressError> {
        if self.staged.len() + input.len() < STAGE_LEN {
            // Grown on demand (at most to STAGE_LEN): a token stream flushed after every event
            // stages one event at a time and keeps a buffer of about that size, not 4 KiB.
            self.staged.extend_from_slice(input);
            return Ok(());
        }
        self.deflate_staged(tally, splicer, out)?;
        if input.len() < STAGE_LEN {
            self.staged.extend_from_slice(input);
            return Ok(());
        }
        self.feed(input, tally, splicer, out)
    }

    /// Hands the staged bytes to deflate.
    fn deflate_staged(
        &mut self,
        tally: &mut Tally,
        splicer: &mut Splicer,
        out: &mut BytesMut,
    ) -> Result<(), CompressError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let staged = std::mem::take(&mut self.staged);
        let result = self.feed(&staged, tally, splicer, out);
        self.staged = staged;
        self.staged.clear();
        result
    }

    /// Hands `input` to deflate, counted in the tally, with codes that suit the stream.
    fn feed(
        &mut self,
        input: &[u8],
        tally: &mut Tally,
        splicer: &mut Splicer,
        out: &mut BytesMut,
    ) -> Result<(), CompressError> {
        if self.compress.codes() == Codes::Fixed && !self.allowance.spend(input.len()) {
            self.switch_to_dynamic_codes(tally, splicer, out)?;
        }
        tally.consume(input);
        self.deflate(input, splicer, out)
    }

    /// Ends fixed codes for this stream: in place if the state is fresh; otherwise the stream is
    /// byte-aligned (a sync flush) and continues in the same state, reset for dynamic codes and
    /// primed with the window (everything deflate has been given so far), as a woken stream does.
    /// Without a window (hibernation off) the reset state starts without history: back-references
    /// to what came before the switch are lost, once.
    fn switch_to_dynamic_codes(
        &mut self,
        tally: &mut Tally,
        splicer: &mut Splicer,
        out: &mut BytesMut,
    ) -> Result<(), CompressError> {
        if self.compress.try_make_dynamic() {
            return Ok(());
        }
        self.drain(Flush::Sync, splicer, out)?;
        // After a sync flush the state holds nothing.
        splicer.end_state(0, out);
        self.compress.reset();
        self.compress.set_level(self.compress.level())?;
        if let Some(history) = &mut tally.history {
            self.compress.set_dictionary(history.contiguous());
        }
        self.held = Some(0);
        Ok(())
    }

    /// Hands `input` to deflate without flushing.
    fn deflate(
        &mut self,
        input: &[u8],
        splicer: &mut Splicer,
        out: &mut BytesMut,
    ) -> Result<(), CompressError> {
        for slice in input.chunks(DEFLATE_SLICE) {
            let mut rest = slice;
            while !rest.is_empty() {
                let (consumed, _) = self.run(rest, Flush::None, splicer, out)?;
                rest = &rest[consumed..];
            }
        }
        Ok(())
    }

    /// Makes everything handed to deflate decodable from `out`: a block flush with fixed codes,
    /// else a partial flush (see [`GzipEncoder::flush`]).
    fn flush(
        &mut self,
        tally: &mut Tally,
        splicer: &mut Splicer,
        out: &mut BytesMut,
    ) -> Result<(), CompressError> {
        self.deflate_staged(tally, splicer, out)?;
        if self.compress.codes() == Codes::Fixed {
            self.drain(Flush::Block, splicer, out)?;
            self.held = None;
        } else {
            self.drain(Flush::Partial, splicer, out)?;
            self.held = if DeflateState::PARTIAL_FLUSH_SHOWS_END {
                Some(splicer.held_after_partial_flush()?)
            } else {
                None
            };
        }
        self.allowance.earn();
        Ok(())
    }

    /// How many bits the state holds back (zeros), right after a flush. If the last flush does
    /// not tell: learnt with a partial flush (an empty fixed-code block, 10 bits) when `mid_byte`
    /// (the stream can continue mid-byte), else none after a sync flush, which pads the stream to
    /// a byte (as it does with a backend whose partial flush does not show the end).
    fn held_bits(
        &mut self,
        mid_byte: bool,
        splicer: &mut Splicer,
        out: &mut BytesMut,
    ) -> Result<u8, CompressError> {
        if let Some(held) = self.held {
            return Ok(held);
        }
        let held = if mid_byte && DeflateState::PARTIAL_FLUSH_SHOWS_END {
            self.drain(Flush::Partial, splicer, out)?;
            splicer.held_after_partial_flush()?
        } else {
            self.drain(Flush::Sync, splicer, out)?;
            0
        };
        self.held = Some(held);
        Ok(held)
    }

    /// Flushes what deflate holds.
    fn drain(
        &mut self,
        mode: Flush,
        splicer: &mut Splicer,
        out: &mut BytesMut,
    ) -> Result<(), CompressError> {
        // zlib's contract: the flush is complete once a call leaves output space unused.
        loop {
            let (_, produced) = self.run(&[], mode, splicer, out)?;
            if produced < SCRATCH_LEN {
                return Ok(());
            }
        }
    }

    fn finish(
        &mut self,
        tally: &mut Tally,
        splicer: &mut Splicer,
        out: &mut BytesMut,
    ) -> Result<(), CompressError> {
        self.deflate_staged(tally, splicer, out)?;
        loop {
            let progress = self
                .compress
                .compress(&[], &mut self.scratch, Flush::Finish)?;
            splicer.write(&self.scratch[..progress.produced], out);
            if progress.ended {
                return Ok(());
            }
            // More output is pending only if the scratch buffer was filled.
            if progress.produced == 0 {
                return Err(CompressError::stalled());
            }
        }
    }

    /// One deflate call into the scratch buffer; returns (input consumed, output produced).
    fn run(
        &mut self,
        input: &[u8],
        flush: Flush,
        splicer: &mut Splicer,
        out: &mut BytesMut,
    ) -> Result<(usize, usize), CompressError> {
        let progress = self.compress.compress(input, &mut self.scratch, flush)?;
        let (consumed, produced) = (progress.consumed, progress.produced);
        if consumed == 0 && produced == 0 && !input.is_empty() {
            // Deflate with free output space always makes progress; guard against a spin anyway.
            return Err(CompressError::stalled());
        }
        splicer.write(&self.scratch[..produced], out);
        Ok((consumed, produced))
    }
}

impl std::fmt::Debug for GzipEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipEncoder")
            .field("settings", &self.settings)
            .field("input_len", &self.tally.input_len)
            .field("hibernating", &self.is_hibernating())
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl GzipEncoder {
    fn new_unpooled(settings: EncoderSettings) -> Self {
        Self::new(settings, None)
    }

    /// An encoder whose state has dynamic codes from the start (a reference for tests).
    #[cfg(feature = "zlib-rs")]
    fn new_dynamic(settings: EncoderSettings) -> Self {
        let mut encoder = Self::new(settings, None);
        if let Some(deflater) = &mut encoder.deflater {
            deflater.compress =
                DeflateState::new(settings.level(), settings.window_bits(), Codes::Dynamic);
        }
        encoder
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn level(level: u32) -> EncoderSettings {
        EncoderSettings {
            level,
            ..EncoderSettings::default()
        }
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    /// Decodes a possibly unfinished gzip stream as far as it goes (what a streaming client sees).
    fn gunzip_prefix(bytes: &[u8]) -> Vec<u8> {
        let mut dec = flate2::write::GzDecoder::new(Vec::new());
        dec.write_all(bytes).expect("valid gzip prefix");
        dec.flush().unwrap();
        dec.get_ref().clone()
    }

    fn json(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\",\"ok\":true}}\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn round_trip_through_gz_decoder() {
        let input = json(2000);
        let mut enc = GzipEncoder::new_unpooled(level(6));
        let mut out = BytesMut::new();
        enc.write(&input, &mut out).unwrap();
        enc.finish(&mut out).unwrap();
        assert_eq!(gunzip(&out), input);
        assert!(out.len() < input.len() / 4);
    }

    #[test]
    fn empty_input_finishes_to_a_valid_member() {
        let mut enc = GzipEncoder::new_unpooled(level(6));
        let mut out = BytesMut::new();
        enc.finish(&mut out).unwrap();
        assert_eq!(gunzip(&out), b"");
        assert_eq!(gunzip(&EMPTY_GZIP_MEMBER), b"");
    }

    #[test]
    fn flush_makes_everything_so_far_decodable() {
        let mut enc = GzipEncoder::new_unpooled(level(6));
        let mut out = BytesMut::new();
        let mut sent = Vec::new();
        for i in 0..50 {
            let line = format!("data: token {i}\n\n");
            enc.write(line.as_bytes(), &mut out).unwrap();
            enc.flush(&mut out).unwrap();
            sent.extend_from_slice(line.as_bytes());
            // Not a sync flush: no empty stored block, no `00 00 ff ff` marker.
            assert!(!out.ends_with(&[0, 0, 0xff, 0xff]), "sync flush marker");
            assert_eq!(gunzip_prefix(&out), sent);
        }
        enc.finish(&mut out).unwrap();
        assert_eq!(gunzip(&out), sent);
    }

    #[test]
    fn repeated_flush_emits_at_most_one_flush_block() {
        let mut enc = GzipEncoder::new_unpooled(level(6));
        let mut out = BytesMut::new();
        enc.flush(&mut out).unwrap();
        assert!(
            out.is_empty(),
            "flush with no input emits nothing, not even the header"
        );
        enc.write(b"hello", &mut out).unwrap();
        enc.flush(&mut out).unwrap();
        let after_first = out.len();
        enc.flush(&mut out).unwrap();
        enc.flush(&mut out).unwrap();
        assert_eq!(out.len(), after_first);
    }

    #[test]
    fn one_byte_writes_round_trip() {
        let input = json(100);
        let mut enc = GzipEncoder::new_unpooled(level(1));
        let mut out = BytesMut::new();
        for b in &input {
            enc.write(std::slice::from_ref(b), &mut out).unwrap();
        }
        enc.finish(&mut out).unwrap();
        assert_eq!(gunzip(&out), input);
    }

    #[test]
    fn incompressible_input_larger_than_scratch_round_trips() {
        // xorshift bytes: deflate output exceeds the scratch buffer many times over.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let input: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for level in [0, 1, 6, 9] {
            let mut enc = GzipEncoder::new_unpooled(self::tests::level(level));
            let mut out = BytesMut::new();
            enc.write(&input, &mut out).unwrap();
            enc.flush(&mut out).unwrap();
            enc.write(&input[..1000], &mut out).unwrap();
            enc.finish(&mut out).unwrap();
            let mut expected = input.clone();
            expected.extend_from_slice(&input[..1000]);
            assert_eq!(gunzip(&out), expected, "level {level}");
        }
    }

    #[test]
    fn every_window_size_round_trips() {
        let input = json(3000);
        for window_bits in [0, 9, 10, 12, 15, 200] {
            let mut enc = GzipEncoder::new_unpooled(EncoderSettings {
                level: 6,
                window_bits,
                can_hibernate: false,
                ..EncoderSettings::default()
            });
            let mut out = BytesMut::new();
            enc.write(&input, &mut out).unwrap();
            enc.flush(&mut out).unwrap();
            enc.write(&input, &mut out).unwrap();
            enc.finish(&mut out).unwrap();
            assert_eq!(
                gunzip(&out),
                [&input[..], &input[..]].concat(),
                "window bits {window_bits}"
            );
        }
    }

    #[test]
    fn header_is_deterministic_and_records_level() {
        for (level, xfl) in [(1, 4), (6, 0), (9, 2), (42, 2)] {
            let mut enc = GzipEncoder::new_unpooled(self::tests::level(level));
            let mut out = BytesMut::new();
            enc.write(b"x", &mut out).unwrap();
            enc.finish(&mut out).unwrap();
            assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff]);
        }
    }

    #[test]
    fn trailer_holds_crc_and_length() {
        let input = b"The quick brown fox jumps over the lazy dog";
        let mut enc = GzipEncoder::new_unpooled(level(6));
        let mut out = BytesMut::new();
        enc.write(input, &mut out).unwrap();
        enc.finish(&mut out).unwrap();
        let n = out.len();
        assert_eq!(&out[n - 8..n - 4], &0x414f_a339u32.to_le_bytes());
        assert_eq!(&out[n - 4..], &(input.len() as u32).to_le_bytes());
    }

    fn sse_event(i: usize) -> String {
        format!(
            "data: {{\"id\":\"chatcmpl-42\",\"object\":\"chat.completion.chunk\",\"created\":1732400000,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i}\"}},\"finish_reason\":null}}]}}\n\n"
        )
    }

    #[test]
    fn hibernating_between_flushes_round_trips() {
        let mut enc = GzipEncoder::new_unpooled(level(6));
        let mut out = BytesMut::new();
        let mut sent = Vec::new();
        for i in 0..40 {
            let event = sse_event(i);
            enc.write(event.as_bytes(), &mut out).unwrap();
            enc.flush(&mut out).unwrap();
            sent.extend_from_slice(event.as_bytes());
            assert_eq!(gunzip_prefix(&out), sent, "decodable after event {i}");
            if i % 3 != 0 {
                assert!(enc.hibernate().unwrap());
                assert!(enc.is_hibernating());
            }
        }
        enc.finish(&mut out).unwrap();
        assert_eq!(gunzip(&out), sent);
    }

    #[test]
    fn finishing_while_hibernating_writes_a_valid_end() {
        let mut enc = GzipEncoder::new_unpooled(level(6));
        let mut out = BytesMut::new();
        enc.write(b"hello", &mut out).unwrap();
        enc.flush(&mut out).unwrap();
        assert!(enc.hibernate().unwrap());
        enc.finish(&mut out).unwrap();
        assert_eq!(gunzip(&out), b"hello");
    }

    #[test]
    fn hibernate_refuses_unflushed_input_and_disabled_history() {
        let mut enc = GzipEncoder::new_unpooled(level(6));
        let mut out = BytesMut::new();
        enc.write(b"hello", &mut out).unwrap();
        assert!(
            !enc.hibernate().unwrap(),
            "unflushed input lives in the deflate state"
        );
        enc.flush(&mut out).unwrap();
        assert!(enc.hibernate().unwrap());

        let mut enc = GzipEncoder::new_unpooled(EncoderSettings {
            can_hibernate: false,
            ..EncoderSettings::default()
        });
        enc.write(b"hello", &mut out).unwrap();
        enc.flush(&mut out).unwrap();
        assert!(!enc.hibernate().unwrap());
        assert!(!enc.is_hibernating());
    }

    #[test]
    fn compress_whole_is_one_complete_member_in_one_allocation() {
        for (len, settings) in [
            (1, level(6)),
            (100, level(6)),
            (1500, level(9)),
            (150, level(0)),
            (100, padded(64)),
        ] {
            let input = json(len);
            let out = compress_whole(settings, None, &input).unwrap();
            assert_eq!(gunzip(&out), input, "{len} bytes, {settings:?}");
            // Sized once from the input: the buffer never had to grow.
            let n = input.len();
            let bound = settings.max_header_len() + n + n / 8 + n / 64 + 64 + 8;
            assert!(out.capacity() <= bound, "{len}: grew to {}", out.capacity());
        }
        // Incompressible input (stored blocks) fits the bound too.
        let noise: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let out = compress_whole(level(6), None, &noise).unwrap();
        assert_eq!(gunzip(&out), noise);
    }

    #[test]
    fn a_reused_state_gives_the_same_bytes_as_a_new_one() {
        let pool = Arc::new(StatePool::new(2, level(6)));
        let inputs: Vec<Vec<u8>> = (1..6).map(|k| json(k * 37)).collect();
        for round in 0..3 {
            for input in &inputs {
                let fresh = compress_whole(level(6), None, input).unwrap();
                let pooled = compress_whole(level(6), Some(&pool), input).unwrap();
                assert_eq!(pooled, fresh, "round {round}");
            }
            // A stream, then a whole body again, sharing the pool.
            let mut fresh = GzipEncoder::new(level(6), None);
            let mut pooled = GzipEncoder::new(level(6), Some(pool.clone()));
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            for input in &inputs {
                fresh.write(input, &mut a).unwrap();
                fresh.flush(&mut a).unwrap();
                pooled.write(input, &mut b).unwrap();
                pooled.flush(&mut b).unwrap();
                // Hibernating hands the state back; waking takes one from the pool.
                assert!(fresh.hibernate().unwrap());
                assert!(pooled.hibernate().unwrap());
            }
            fresh.finish(&mut a).unwrap();
            pooled.finish(&mut b).unwrap();
            assert_eq!(b, a, "round {round}");
            assert_eq!(gunzip(&b), inputs.concat());
        }
        assert!(pool.idle() <= 2, "bounded: {}", pool.idle());
        assert!(pool.idle() >= 1, "states came back");
        // Only the same level is handed out.
        assert!(pool.take(level(1), Codes::Dynamic).is_none());
        assert!(pool.take(level(6), Codes::Dynamic).is_some());
        // A pool of size 0 keeps nothing.
        let none = StatePool::new(0, level(6));
        compress_whole(level(6), Some(&none), b"hello").unwrap();
        assert_eq!(none.idle(), 0);
    }

    #[cfg(feature = "zlib-rs")]
    fn codes(encoder: &GzipEncoder) -> Codes {
        encoder.deflater.as_ref().expect("awake").compress.codes()
    }

    #[cfg(feature = "zlib-rs")]
    /// Writes `event`, flushes, and checks the output so far decodes to everything written.
    fn send(encoder: &mut GzipEncoder, event: &[u8], out: &mut BytesMut, sent: &mut Vec<u8>) {
        encoder.write(event, out).unwrap();
        encoder.flush(out).unwrap();
        sent.extend_from_slice(event);
        assert_eq!(gunzip_prefix(out), *sent, "decodable after each flush");
    }

    /// Token-sized events keep fixed codes (ended by `Z_BLOCK`, nothing but end-of-block bits held
    /// back); a stream whose blocks grow switches to dynamic codes mid-stream and stays decodable
    /// at every flush, before, across and after the switch.
    #[cfg(feature = "zlib-rs")]
    #[test]
    fn event_sized_blocks_keep_fixed_codes_and_larger_ones_switch_to_dynamic_mid_stream() {
        let mut encoder = GzipEncoder::new_unpooled(level(6));
        let (mut out, mut sent) = (BytesMut::new(), Vec::new());
        // Incompressible (stored blocks), and text of a few letters, mostly `a`: dynamic codes
        // give such blocks a short end-of-block symbol, so `Z_BLOCK` would hold back bits of the
        // last letter (2,625 of 20,000 such blocks in a probe; this test fails with a dynamic-code state).
        // Fixed codes flush them as decodably as the rest.
        let noise: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        send(&mut encoder, &noise, &mut out, &mut sent);
        for seed in 1..=20 {
            send(&mut encoder, &skewed(seed), &mut out, &mut sent);
        }
        for i in 0..40 {
            send(&mut encoder, sse_event(i).as_bytes(), &mut out, &mut sent);
        }
        // A burst of a few events in one flush is within the saved-up allowance.
        let burst: String = (40..45).map(sse_event).collect();
        send(&mut encoder, burst.as_bytes(), &mut out, &mut sent);
        assert_eq!(codes(&encoder), Codes::Fixed);
        let before = out.len();
        send(&mut encoder, &json(300), &mut out, &mut sent);
        let after = out.len();
        assert_eq!(
            codes(&encoder),
            Codes::Dynamic,
            "a 10 KB block ends fixed codes"
        );
        for i in 45..60 {
            send(&mut encoder, sse_event(i).as_bytes(), &mut out, &mut sent);
        }
        assert_eq!(codes(&encoder), Codes::Dynamic, "for good");
        encoder.finish(&mut out).unwrap();
        assert_eq!(gunzip(&out), sent);
        // The switch costs a sync flush and keeps the window: the big block is about as small as
        // in a stream that had dynamic codes all along.
        let mut reference = GzipEncoder::new_dynamic(level(6));
        let mut reference_out = BytesMut::new();
        let prefix =
            sent.len() - json(300).len() - (45..60).map(|i| sse_event(i).len()).sum::<usize>();
        reference
            .write(&sent[..prefix], &mut reference_out)
            .unwrap();
        reference.flush(&mut reference_out).unwrap();
        let mark = reference_out.len();
        reference.write(&json(300), &mut reference_out).unwrap();
        reference.flush(&mut reference_out).unwrap();
        let (ours, theirs) = (after - before, reference_out.len() - mark);
        assert!(ours <= theirs + 8, "big block: {ours} B vs {theirs} B");
    }

    #[cfg(feature = "zlib-rs")]
    /// 94 to 400 bytes over 2 to 5 letters, mostly `a`.
    fn skewed(seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let letters = 2 + next() % 4;
        let len = 94 + next() as usize % 307;
        (0..len)
            .map(|_| {
                let r = next();
                if (r >> 20) % 3 == 0 {
                    b'a' + (r % letters) as u8
                } else {
                    b'a'
                }
            })
            .collect()
    }

    /// Without hibernation there is no window to prime with: the switch to dynamic codes starts
    /// the reset state without history, and everything still decodes at every flush.
    #[cfg(feature = "zlib-rs")]
    #[test]
    fn a_stream_without_hibernation_also_starts_fixed_and_switches_without_a_window() {
        let mut encoder = GzipEncoder::new_unpooled(EncoderSettings {
            can_hibernate: false,
            ..level(6)
        });
        let (mut out, mut sent) = (BytesMut::new(), Vec::new());
        for i in 0..20 {
            send(&mut encoder, sse_event(i).as_bytes(), &mut out, &mut sent);
        }
        assert_eq!(codes(&encoder), Codes::Fixed);
        send(&mut encoder, &json(300), &mut out, &mut sent);
        assert_eq!(codes(&encoder), Codes::Dynamic);
        for i in 20..40 {
            send(&mut encoder, sse_event(i).as_bytes(), &mut out, &mut sent);
        }
        encoder.finish(&mut out).unwrap();
        assert_eq!(gunzip(&out), sent);
    }

    /// Fixed codes make token events smaller: the flush needs no empty block.
    #[cfg(feature = "zlib-rs")]
    #[test]
    fn fixed_codes_make_token_events_smaller_than_partial_flushes() {
        let stream = |mut encoder: GzipEncoder| {
            let mut out = BytesMut::new();
            for i in 0..200 {
                encoder.write(sse_event(i).as_bytes(), &mut out).unwrap();
                encoder.flush(&mut out).unwrap();
            }
            (codes(&encoder), out.len())
        };
        let (fixed_codes, fixed) = stream(GzipEncoder::new_unpooled(level(6)));
        let (dynamic_codes, dynamic) = stream(GzipEncoder::new_dynamic(level(6)));
        assert_eq!((fixed_codes, dynamic_codes), (Codes::Fixed, Codes::Dynamic));
        // About 10 bits (the partial flush's empty block) per event.
        assert!(
            fixed + 200 < dynamic,
            "fixed {fixed} B vs dynamic {dynamic} B for 200 events"
        );
    }

    #[cfg(feature = "zlib-rs")]
    #[test]
    fn the_pool_gives_streams_fixed_codes_and_complete_bodies_dynamic_ones() {
        let pool = Arc::new(StatePool::new(4, level(6)));
        // A stream's state goes back to the pool with its fixed codes.
        let mut stream = GzipEncoder::new(level(6), Some(pool.clone()));
        assert_eq!(codes(&stream), Codes::Fixed);
        let mut out = BytesMut::new();
        stream.write(b"data: one\n\n", &mut out).unwrap();
        stream.flush(&mut out).unwrap();
        stream.finish(&mut out).unwrap();
        assert_eq!(pool.idle(), 1);
        // A complete body takes it and makes it dynamic (it is fresh), and compresses exactly as
        // a dynamic state would.
        let input = json(500);
        let whole = compress_whole(level(6), Some(&pool), &input).unwrap();
        assert_eq!(whole, compress_whole(level(6), None, &input).unwrap());
        assert_eq!(pool.idle(), 1);
        assert_eq!(
            pool.take(level(6), Codes::Fixed).map(|s| s.codes()),
            Some(Codes::Dynamic),
            "no fixed state left: the dynamic one is handed out instead"
        );
    }

    #[test]
    fn history_keeps_exactly_the_last_window() {
        let mut history = Window::new(4);
        history.remember(b"ab");
        assert_eq!(history.contiguous(), b"ab");
        // Allocated at full size on the first write, filled (touched) only as input arrives.
        assert_eq!((history.buf.capacity(), history.buf.len()), (4, 2));
        let allocation = history.buf.as_ptr();
        history.remember(b"c");
        history.remember(b"de");
        assert_eq!(history.contiguous(), b"bcde");
        history.remember(b"f");
        history.remember(b"gh");
        assert_eq!(history.contiguous(), b"efgh");
        history.remember(b"0123456789");
        assert_eq!(history.contiguous(), b"6789");
        history.remember(b"");
        assert_eq!(history.contiguous(), b"6789");
        assert_eq!(history.buf.len(), 4);
        assert_eq!(
            history.buf.as_ptr(),
            allocation,
            "allocated once, at the window size"
        );
        // Against a model, over writes of every size around the capacity.
        let mut ring = Window::new(7);
        let mut model: Vec<u8> = Vec::new();
        for (i, len) in [3usize, 0, 7, 1, 6, 8, 2, 13, 5, 7, 4].iter().enumerate() {
            let input: Vec<u8> = (0..*len).map(|k| (i * 16 + k) as u8).collect();
            ring.remember(&input);
            model.extend_from_slice(&input);
            let keep = model.len().saturating_sub(7);
            assert_eq!(ring.contiguous(), &model[keep..], "after write {i}");
        }
    }

    /// A young stream's window (one event, too small to be worth packing, or bytes that do not
    /// pack) keeps only its bytes while the stream sleeps, not a whole window's allocation.
    #[cfg(feature = "zlib-rs")]
    #[test]
    fn a_window_that_does_not_pack_keeps_only_its_bytes() {
        let noise: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for bytes in [&b"data: {\"a\":1}\n\n"[..], &noise[..]] {
            let mut window = Window::new(1 << 15);
            window.remember(bytes);
            assert_eq!(window.buf.capacity(), 1 << 15);
            window.pack(&mut DeflateState::new(6, 15, Codes::Dynamic));
            assert!(
                window.held() <= bytes.len(),
                "held {} of {}",
                window.held(),
                bytes.len()
            );
            assert_eq!(window.contiguous(), bytes, "and gives them back");
            window.remember(b"more");
            assert_eq!(window.contiguous(), [bytes, b"more"].concat());
        }
    }

    #[cfg(feature = "zlib-rs")]
    #[test]
    fn a_packed_window_unpacks_byte_for_byte_and_holds_a_fraction_of_it() {
        let events: Vec<u8> = (0..2000)
            .flat_map(|i| {
                format!(
                    "data: {{\"choices\":[{{\"delta\":{{\"content\":\" tok{}\"}}}}]}}\n\n",
                    i % 29
                )
                .into_bytes()
            })
            .collect();
        // Partly filled, exactly full, and wrapped (head in the middle) rings.
        for (capacity, fill) in [(32768, 1000), (32768, 32768), (32768, 50_001), (512, 777)] {
            let mut window = Window::new(capacity);
            window.remember(&events[..fill.min(events.len())]);
            if fill > events.len() {
                window.remember(&events[..fill - events.len()]);
            }
            let expected = window.contiguous().to_vec();
            // Rotate the ring again so packing starts from a wrapped head.
            window.remember(&expected[..expected.len().min(7)]);
            let expected = window.contiguous().to_vec();
            let mut compress = DeflateState::new(6, 15, Codes::Dynamic);
            compress
                .compress(b"some earlier stream", &mut [0; 64], Flush::Sync)
                .unwrap();
            window.pack(&mut compress);
            assert!(window.buf.is_empty(), "{capacity}/{fill}: still unpacked");
            assert!(
                window.held() * 4 < expected.len().max(256),
                "{capacity}/{fill}: packed {} of {}",
                window.held(),
                expected.len()
            );
            assert_eq!(window.contiguous(), &expected[..], "{capacity}/{fill}");
            // Remembering goes on from where it was.
            window.remember(b"next");
            let mut model = expected.clone();
            model.extend_from_slice(b"next");
            let keep = model.len().saturating_sub(capacity);
            assert_eq!(window.contiguous(), &model[keep..]);
        }
    }

    #[test]
    fn partial_flushes_cost_less_than_sync_flushes_and_a_young_stream_is_padded_to_sleep() {
        let events: Vec<String> = (0..200)
            .map(|i| {
                format!(
                    "data: {{\"choices\":[{{\"delta\":{{\"content\":\" tok{}\"}}}}]}}\n\n",
                    i % 17
                )
            })
            .collect();
        // Bytes per event with partial flushes (ours) and with sync flushes (a plain deflate).
        let mut enc = GzipEncoder::new_unpooled(level(6));
        let mut out = BytesMut::new();
        let mut sent = Vec::new();
        for (i, event) in events.iter().enumerate() {
            enc.write(event.as_bytes(), &mut out).unwrap();
            enc.flush(&mut out).unwrap();
            sent.extend_from_slice(event.as_bytes());
            assert_eq!(gunzip_prefix(&out), sent, "decodable after event {i}");
        }
        let partial = out.len();
        let mut sync = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut sync_out = Vec::with_capacity(1 << 20);
        for event in &events {
            sync.compress_vec(event.as_bytes(), &mut sync_out, flate2::FlushCompress::Sync)
                .unwrap();
        }
        assert!(
            partial + 2 * events.len() < sync_out.len() + 10,
            "partial {partial} B vs sync {} B for {} events",
            sync_out.len(),
            events.len()
        );
        // A young stream (less than a window of history) is padded to a byte when it falls
        // asleep: an empty stored block, held, and sent in front of its next output.
        assert!(enc.hibernate().unwrap());
        let held = enc.held_output.as_deref().map_or(0, <[u8]>::len);
        assert!((4..=6).contains(&held), "an empty stored block: {held} B");
        let before = out.len();
        enc.write(b"after waking", &mut out).unwrap();
        assert_eq!(out.len(), before + held, "what was held goes out first");
        assert!(enc.held_output.is_none());
        enc.flush(&mut out).unwrap();
        sent.extend_from_slice(b"after waking");
        assert_eq!(gunzip_prefix(&out), sent);
        enc.finish(&mut out).unwrap();
        assert_eq!(gunzip(&out), sent);
    }

    #[test]
    fn a_stream_falling_asleep_emits_nothing_and_its_end_releases_the_held_alignment() {
        for events in [1, 3] {
            let mut enc = GzipEncoder::new_unpooled(level(6));
            let mut out = BytesMut::new();
            let mut sent = Vec::new();
            for i in 0..events {
                let event = sse_event(i);
                enc.write(event.as_bytes(), &mut out).unwrap();
                enc.flush(&mut out).unwrap();
                sent.extend_from_slice(event.as_bytes());
            }
            let before = out.len();
            assert!(enc.hibernate().unwrap());
            assert_eq!(out.len(), before, "nothing to send when falling asleep");
            assert_eq!(gunzip_prefix(&out), sent, "still decodable without it");
            // Hibernating again (already asleep) holds nothing more.
            assert!(enc.hibernate().unwrap());
            enc.finish(&mut out).unwrap();
            assert_eq!(gunzip(&out), sent);
        }
    }

    fn padded(padding: u16) -> EncoderSettings {
        EncoderSettings {
            padding,
            ..EncoderSettings::default()
        }
    }

    /// Checks the header of a padded member and returns the padding length (LEN).
    fn padding_of(member: &[u8]) -> usize {
        assert_eq!(&member[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(member[3], FEXTRA, "FLG: FEXTRA only");
        assert_eq!(&member[4..8], &[0, 0, 0, 0], "MTIME 0");
        let xlen = usize::from(u16::from_le_bytes([member[10], member[11]]));
        assert_eq!(&member[12..14], b"TP", "SI1 SI2");
        let len = usize::from(u16::from_le_bytes([member[14], member[15]]));
        assert_eq!(xlen, 4 + len, "XLEN covers exactly the one subfield");
        assert!(member[16..16 + len].iter().all(|&b| b == 0), "zeros");
        len
    }

    #[test]
    fn padding_is_an_extra_field_that_gz_decoder_skips() {
        let input = json(300);
        let mut plain = BytesMut::new();
        let mut enc = GzipEncoder::new_unpooled(level(6));
        enc.write(&input, &mut plain).unwrap();
        enc.finish(&mut plain).unwrap();
        for _ in 0..50 {
            let mut enc = GzipEncoder::new_unpooled(padded(100));
            let mut out = BytesMut::new();
            enc.write(&input, &mut out).unwrap();
            enc.finish(&mut out).unwrap();
            let len = padding_of(&out);
            assert!(len <= 100);
            assert_eq!(
                out.len(),
                plain.len() + 6 + len,
                "header + 6 + LEN, rest unchanged"
            );
            assert_eq!(
                &out[16 + len..],
                &plain[10..],
                "the deflate stream and trailer as before"
            );
            assert_eq!(gunzip(&out), input);
        }
    }

    #[test]
    fn padded_stream_decodes_after_every_flush_and_across_hibernation() {
        let mut enc = GzipEncoder::new_unpooled(padded(64));
        let mut out = BytesMut::new();
        let mut sent = Vec::new();
        for i in 0..30 {
            let event = sse_event(i);
            enc.write(event.as_bytes(), &mut out).unwrap();
            enc.flush(&mut out).unwrap();
            sent.extend_from_slice(event.as_bytes());
            assert_eq!(gunzip_prefix(&out), sent, "decodable after event {i}");
            if i % 2 == 0 {
                assert!(enc.hibernate().unwrap());
            }
        }
        enc.finish(&mut out).unwrap();
        let len = padding_of(&out);
        assert_eq!(gunzip(&out), sent);
        // The padding is written once, in the header: nothing after it is a second header.
        assert!(len <= 64);
    }

    #[test]
    fn padded_empty_member_decodes() {
        for _ in 0..20 {
            let mut out = BytesMut::new();
            GzipEncoder::write_empty_member(padded(32), &mut out);
            let len = padding_of(&out);
            assert_eq!(out.len(), EMPTY_GZIP_MEMBER.len() + 6 + len);
            assert_eq!(gunzip(&out), b"");
        }
        let mut out = BytesMut::new();
        GzipEncoder::write_empty_member(EncoderSettings::default(), &mut out);
        assert_eq!(
            &out[..],
            &EMPTY_GZIP_MEMBER,
            "no padding: the constant member"
        );
    }

    #[test]
    fn no_padding_means_no_extra_field() {
        let mut enc = GzipEncoder::new_unpooled(padded(0));
        let mut out = BytesMut::new();
        enc.write(b"hello", &mut out).unwrap();
        enc.finish(&mut out).unwrap();
        assert_eq!(out[3], 0, "FLG 0");
        assert_eq!(gunzip(&out), b"hello");
    }

    #[test]
    fn padding_lengths_cover_the_whole_range_evenly() {
        // 0..=8, 9000 draws: every value about 1000 times (a binomial, sd about 30).
        let mut counts = [0usize; 9];
        for _ in 0..9000 {
            let mut out = BytesMut::new();
            GzipEncoder::write_empty_member(padded(8), &mut out);
            counts[padding_of(&out)] += 1;
        }
        assert!(
            counts.iter().all(|&n| (800..=1200).contains(&n)),
            "uneven: {counts:?}"
        );
        // A wide range: the extremes are reachable and the mean is near the middle.
        let draws: Vec<u16> = (0..20_000).map(|_| random_up_to(1000)).collect();
        assert!(draws.iter().all(|&n| n <= 1000));
        assert!(draws.contains(&0) || draws.contains(&1));
        assert!(draws.contains(&1000) || draws.contains(&999));
        let mean = draws.iter().map(|&n| f64::from(n)).sum::<f64>() / draws.len() as f64;
        assert!((480.0..520.0).contains(&mean), "mean {mean}");
    }

    #[test]
    fn padding_is_capped_so_xlen_fits() {
        assert_eq!(padded(u16::MAX).padding(), MAX_PADDING);
        let input = b"capped".repeat(10);
        for _ in 0..5 {
            let mut enc = GzipEncoder::new_unpooled(padded(u16::MAX));
            let mut out = BytesMut::new();
            enc.write(&input, &mut out).unwrap();
            enc.finish(&mut out).unwrap();
            assert!(padding_of(&out) <= usize::from(MAX_PADDING));
            assert_eq!(gunzip(&out), input);
        }
        // The largest padding itself: XLEN = 65535.
        let mut out = BytesMut::new();
        padded(MAX_PADDING).write_padded_header(MAX_PADDING, &mut out);
        assert_eq!(&out[10..12], &u16::MAX.to_le_bytes());
        out.extend_from_slice(&FINAL_EMPTY_BLOCK);
        out.extend_from_slice(&[0; 8]);
        assert_eq!(padding_of(&out), usize::from(MAX_PADDING));
        assert_eq!(gunzip(&out), b"");
    }

    /// Bytes for 50 events, all of them counted, with and without dropping the state after each
    /// event, after `warm_up` events that did not sleep.
    #[cfg(feature = "zlib-rs")]
    fn sleeping_and_awake_bytes(warm_up: usize) -> (usize, usize) {
        let mut sizes = [0usize; 2];
        for (hibernate, size) in [false, true].into_iter().zip(&mut sizes) {
            let mut enc = GzipEncoder::new_unpooled(level(6));
            let mut out = BytesMut::new();
            let mut sent = Vec::new();
            for i in 0..warm_up + 50 {
                let before = out.len();
                enc.write(sse_event(i).as_bytes(), &mut out).unwrap();
                enc.flush(&mut out).unwrap();
                sent.extend_from_slice(sse_event(i).as_bytes());
                assert_eq!(gunzip_prefix(&out), sent, "event {i} decodable at once");
                if i >= warm_up {
                    *size += out.len() - before;
                    if hibernate {
                        assert!(enc.hibernate().unwrap());
                    }
                }
            }
            enc.finish(&mut out).unwrap();
            assert_eq!(gunzip(&out), sent);
        }
        (sizes[1], sizes[0])
    }

    /// A stream that sleeps after every event and wakes for the next, with a full window: the
    /// woken states are primed with the window, so the events compress as well, and each wakes
    /// mid-byte where the stream stopped, so a sleep costs no padding, only the partial flush's
    /// empty block (10 bits) that shows where the stream ends.
    #[cfg(feature = "zlib-rs")]
    #[test]
    fn waking_with_a_full_window_keeps_the_ratio_and_costs_no_padding() {
        // 200 events of about 230 bytes fill the 32 KiB window.
        let (sleeping, awake) = sleeping_and_awake_bytes(200);
        assert!(
            sleeping <= awake + 50 * 3 / 2,
            "{sleeping} B sleeping after each event vs {awake} B never sleeping"
        );
    }

    /// The bytes a woken state is given and then discards (`splice::prefix_for`) are out of
    /// deflate's reach once it is primed with a full window: input made of them, written right
    /// after waking mid-byte, decodes exactly, at levels 1 to 9 and several window sizes.
    #[cfg(feature = "zlib-rs")]
    #[test]
    fn the_discarded_bytes_are_never_referred_to() {
        let discarded: Vec<u8> = (0..40).flat_map(|_| 0x90u8..=0x97).collect();
        for window_bits in [9, 12, 15] {
            for level in [1, 2, 3, 4, 5, 6, 9] {
                let settings = EncoderSettings {
                    level,
                    window_bits,
                    ..EncoderSettings::default()
                };
                let mut enc = GzipEncoder::new_unpooled(settings);
                let mut out = BytesMut::new();
                let mut sent = Vec::new();
                let mut mid_byte_wakes = 0;
                for i in 0..200 {
                    let full = enc.tally.history.as_ref().is_some_and(Window::is_full);
                    if enc.splicer.pending() > 0 && full {
                        mid_byte_wakes += 1;
                    }
                    let event = if i % 3 == 2 {
                        discarded.clone()
                    } else {
                        sse_event(i).into_bytes()
                    };
                    enc.write(&event, &mut out).unwrap();
                    enc.flush(&mut out).unwrap();
                    sent.extend_from_slice(&event);
                    assert_eq!(
                        gunzip_prefix(&out),
                        sent,
                        "{window_bits} bits, level {level}, event {i}"
                    );
                    assert!(enc.hibernate().unwrap());
                }
                enc.finish(&mut out).unwrap();
                assert_eq!(gunzip(&out), sent);
                assert!(
                    mid_byte_wakes > 20,
                    "{window_bits} bits, level {level}: {mid_byte_wakes}"
                );
            }
        }
    }

    /// A young stream (less than a window of history) is padded to a byte each time it sleeps:
    /// an empty stored block, about 5 bytes. (zlib-rs: a miniz_oxide state wakes unprimed.)
    #[cfg(feature = "zlib-rs")]
    #[test]
    fn a_young_stream_pays_a_padding_per_sleep() {
        let (sleeping, awake) = sleeping_and_awake_bytes(10);
        assert!(
            sleeping <= awake + 50 * 7,
            "{sleeping} B sleeping after each event vs {awake} B never sleeping"
        );
    }
}
