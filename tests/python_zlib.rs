//! A second, independent decoder: CPython's `zlib` (the C zlib), fed frame by frame as a streaming
//! client would. Checks that after every frame the layer yields at a stall, the decoder has output
//! exactly what the handler produced so far, and that the finished stream is a complete member.

mod support;

use std::time::Duration;

use support::*;
use tower_gzip::{FlushPolicy, GzipLayer};

const NDJSON: &str = "application/x-ndjson";

#[test]
fn python_zlib_decodes_each_flushed_frame_and_the_whole_member() {
    let chunks: Vec<Vec<u8>> = (0..30)
        .map(|i| match i % 3 {
            0 => format!("{{\"token\":\"t{i}\"}}\n").into_bytes(),
            1 => json_of_size(5000 + i * 100),
            _ => b"x".repeat(1 + i),
        })
        .collect();
    for layer in [
        GzipLayer::new(),
        GzipLayer::new().level(1),
        GzipLayer::new()
            .level(9)
            .flush_policy(FlushPolicy::EveryFrame),
    ] {
        let (frames, _) = frames_with_stalls(&layer, NDJSON, &chunks);
        // One frame per stall, plus the final one.
        assert_eq!(frames.len(), chunks.len() + 1);
        let (decoded, eof) = python::decode(&frames);
        assert!(eof, "the gzip member is complete");
        for (k, chunk) in chunks.iter().enumerate() {
            assert_eq!(
                &decoded[k], chunk,
                "frame {k} decodes to chunk {k} on its own"
            );
        }
        assert!(
            decoded[chunks.len()].is_empty(),
            "the last frame only closes the member"
        );
    }
}

/// 94 to 400 bytes over 2 to 5 letters, mostly `a`: blocks for which dynamic Huffman codes have a
/// short end-of-block symbol, the case where a `Z_BLOCK` flush of a dynamic-code block would hold
/// back the last letter's bits.
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
        .map(|_| match next() {
            r if (r >> 20) % 3 == 0 => b'a' + (r % letters) as u8,
            _ => b'a',
        })
        .collect()
}

/// Event-sized frames are flushed with fixed Huffman codes and `Z_BLOCK` (no empty block after
/// them); a stream whose frames grow switches to dynamic codes mid-stream. C zlib decodes every
/// frame completely on arrival, before, across and after the switch, and the member at the end.
#[test]
fn python_zlib_decodes_each_fixed_code_event_on_arrival_and_across_the_switch() {
    let mut chunks: Vec<Vec<u8>> = (1..=40).map(skewed).collect();
    chunks.extend((0..40).map(|i| format!("data: {{\"token\":\" t{i}\"}}\n\n").into_bytes()));
    chunks.extend((0..5).map(|i| json_of_size(3000 + i * 1000)));
    chunks.extend((41..=60).map(skewed));
    for layer in [
        GzipLayer::new().compress_sse(true),
        GzipLayer::new().compress_sse(true).level(1),
        GzipLayer::new().compress_sse(true).level(9),
    ] {
        let (frames, _) = frames_with_stalls(&layer, "text/event-stream", &chunks);
        assert_eq!(frames.len(), chunks.len() + 1);
        let (decoded, eof) = python::decode(&frames);
        assert!(eof, "the gzip member is complete");
        for (k, chunk) in chunks.iter().enumerate() {
            assert_eq!(
                &decoded[k], chunk,
                "frame {k} decodes to chunk {k} on arrival"
            );
        }
    }
}

/// A stream that sleeps at every stall after a full window of history wakes mid-byte where it
/// stopped (the crate's `splice` module): its woken deflate state is started that many bits into
/// a byte, and its first byte carries the stream's unfinished one. C zlib decodes every frame on
/// arrival and the whole member, with token events, skewed blocks and incompressible bytes
/// (stored blocks) after the window, at levels 0 (stored blocks only), 1, 2, 4, 6 and 9.
#[test]
fn python_zlib_decodes_a_stream_that_wakes_mid_byte_on_arrival() {
    // A full window first, in chunks within one poll's input budget (one frame each).
    let mut chunks: Vec<Vec<u8>> = (0..3).map(|i| json_of_size(14_000 + i)).collect();
    for i in 0..60u64 {
        chunks.push(match i % 4 {
            0 => format!("data: {{\"token\":\" t{i}\"}}\n\n").into_bytes(),
            1 => skewed(i),
            2 => (0..(50 + i * 7))
                .map(|k| (k.wrapping_mul(0x9e37_79b9) >> 13) as u8)
                .collect(),
            _ => json_of_size(300 + i as usize * 10),
        });
    }
    for level in [0, 1, 2, 4, 6, 9] {
        let layer = GzipLayer::new()
            .compress_sse(true)
            .level(level)
            .hibernate_after(Duration::ZERO);
        let (frames, held) = frames_with_stalls(&layer, "text/event-stream", &chunks);
        assert_eq!(frames.len(), chunks.len() + 1);
        assert!(
            held.iter().all(|h| !h),
            "level {level}: asleep after every frame"
        );
        let (decoded, eof) = python::decode(&frames);
        assert!(eof, "level {level}: the gzip member is complete");
        for (k, chunk) in chunks.iter().enumerate() {
            assert_eq!(
                &decoded[k], chunk,
                "level {level}: frame {k} decodes to chunk {k} on arrival"
            );
        }
    }
}

#[test]
fn python_zlib_decodes_an_empty_compressed_body() {
    let (frames, _) = frames_with_stalls(&GzipLayer::new(), NDJSON, &[]);
    let (decoded, eof) = python::decode(&frames);
    assert!(eof);
    assert!(decoded.iter().all(Vec::is_empty));
}
