//! A second, independent decoder: CPython's `zlib` (the C zlib), fed frame by frame as a streaming
//! client would. Checks that after every frame the layer yields at a stall, the decoder has output
//! exactly what the handler produced so far, and that the finished stream is a complete member.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use bytes::Bytes;
use support::*;
use tower_gzip::{FlushPolicy, GzipLayer};

/// Reads hex frames, one per line; prints per frame `out <hex of decoded bytes>`, then `eof` and
/// `unused` lines.
const DECODER: &str = r#"
import sys, zlib
d = zlib.decompressobj(16 + zlib.MAX_WBITS)
for line in sys.stdin:
    print("out", d.decompress(bytes.fromhex(line.strip())).hex())
print("eof", d.eof)
print("unused", d.unused_data.hex())
"#;

/// Decodes `frames` with Python's zlib; returns the output after each frame and whether the gzip
/// member was complete.
fn python_decode(frames: &[Bytes]) -> (Vec<Vec<u8>>, bool) {
    let mut child = Command::new("python3")
        .args(["-c", DECODER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (CI installs it)");
    let input: String = frames.iter().map(|f| hex(f) + "\n").collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "python zlib failed: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut decoded = Vec::new();
    let mut eof = false;
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "out" => decoded.push(unhex(value)),
            "eof" => eof = value == "True",
            "unused" => assert_eq!(value, "", "no bytes after the gzip member"),
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert_eq!(decoded.len(), frames.len());
    (decoded, eof)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Runs chunks through the layer with a stall after each; returns the frames it yielded.
fn frames_with_stalls(layer: &GzipLayer, chunks: &[Vec<u8>]) -> Vec<Bytes> {
    let mut steps = Vec::new();
    for chunk in chunks {
        steps.push(Step::Data(Bytes::from(chunk.clone())));
        steps.push(Step::Pending);
    }
    steps.push(Step::End);
    let mut body = wrap(layer, "application/x-ndjson", Script::new(steps));
    let mut frames = Vec::new();
    loop {
        match poll_once(&mut body) {
            Polled::Data(d) => frames.push(d),
            Polled::Pending => {}
            Polled::End => return frames,
            other => panic!("{other:?}"),
        }
    }
}

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
        let frames = frames_with_stalls(&layer, &chunks);
        // One frame per stall, plus the final one.
        assert_eq!(frames.len(), chunks.len() + 1);
        let (decoded, eof) = python_decode(&frames);
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
    let frames = frames_with_stalls(&GzipLayer::new(), &[]);
    let (decoded, eof) = python_decode(&frames);
    assert!(eof);
    assert!(decoded.iter().all(Vec::is_empty));
}
