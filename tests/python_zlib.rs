//! A second, independent decoder: CPython's `zlib` (the C zlib), fed frame by frame as a streaming
//! client would. Checks that after every frame the layer yields at a stall, the decoder has output
//! exactly what the handler produced so far, and that the finished stream is a complete member.

mod support;

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

#[test]
fn python_zlib_decodes_an_empty_compressed_body() {
    let (frames, _) = frames_with_stalls(&GzipLayer::new(), NDJSON, &[]);
    let (decoded, eof) = python::decode(&frames);
    assert!(eof);
    assert!(decoded.iter().all(Vec::is_empty));
}
