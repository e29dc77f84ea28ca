//! `GzipLayer::random_padding`, in process: the gzip header of each compressed response carries an
//! extra field of random length (RFC 1952 FEXTRA, one `TP` subfield of zeros), so the length of
//! the same body varies from response to response; streams stay decodable after every flush,
//! across hibernation too, by flate2 and by CPython's zlib (the C zlib) fed frame by frame; with
//! the default there is no extra field. The interop clients (curl, reqwest, Chromium, Python over
//! HTTP) are in `interop_padding.rs`.

mod support;

use std::collections::BTreeSet;

use bytes::Bytes;
use http_body_util::Full;
use support::*;
use tower_gzip::{FlushPolicy, GzipLayer};

const SSE: &str = "text/event-stream";

/// The padding length (LEN) of a gzip member's header, after checking the header's layout; `None`
/// when the member has no extra field.
fn padding_of(member: &[u8]) -> Option<usize> {
    assert_eq!(&member[..3], &[0x1f, 0x8b, 8], "a gzip member");
    match member[3] {
        0 => None,
        0x04 => {
            let xlen = usize::from(u16::from_le_bytes([member[10], member[11]]));
            assert_eq!(&member[12..14], b"TP", "the padding subfield id");
            let len = usize::from(u16::from_le_bytes([member[14], member[15]]));
            assert_eq!(xlen, 4 + len, "XLEN holds exactly the one subfield");
            assert!(member[16..16 + len].iter().all(|&b| b == 0));
            Some(len)
        }
        flags => panic!("unexpected FLG {flags:#04x}"),
    }
}

/// One whole response of `body` through `layer`, compressed.
fn compress_whole(layer: &GzipLayer, body: &Bytes) -> Bytes {
    let mut body = wrap(layer, "application/json", Full::new(body.clone()));
    let mut out = Vec::new();
    loop {
        match poll_once(&mut body) {
            Polled::Data(data) => out.extend_from_slice(&data),
            Polled::End => return Bytes::from(out),
            // A poll whose input budget is spent yields to the executor (and wakes itself).
            Polled::Pending => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_same_body_gets_many_different_lengths_spanning_the_bound() {
    let json = Bytes::from(json_of_size(4000));
    let plain = compress_whole(&GzipLayer::new(), &json);
    let layer = GzipLayer::new().random_padding(64);
    let mut lengths = BTreeSet::new();
    let mut paddings = BTreeSet::new();
    for _ in 0..200 {
        let gzip = compress_whole(&layer, &json);
        let padding = padding_of(&gzip).expect("padded");
        assert!(padding <= 64);
        assert_eq!(gzip.len(), plain.len() + 6 + padding);
        assert_eq!(
            &gzip[16 + padding..],
            &plain[10..],
            "only the header differs"
        );
        assert_eq!(gunzip(&gzip), json);
        lengths.insert(gzip.len());
        paddings.insert(padding);
    }
    // 200 uniform draws from 65 values: about 62 distinct ones are expected, and the chance that
    // none falls in 0..=4 (or none in 60..=64) is below 1e-6.
    assert!(
        lengths.len() >= 45,
        "only {} distinct lengths",
        lengths.len()
    );
    let (min, max) = (paddings.first().unwrap(), paddings.last().unwrap());
    assert!(
        *min <= 4 && *max >= 60,
        "extra bytes span only {min}..={max} of 0..=64"
    );
}

#[test]
fn by_default_there_is_no_extra_field_and_the_length_is_fixed() {
    let json = Bytes::from(json_of_size(4000));
    for layer in [GzipLayer::new(), GzipLayer::new().random_padding(0)] {
        let lengths: BTreeSet<usize> = (0..20)
            .map(|_| {
                let gzip = compress_whole(&layer, &json);
                assert_eq!(padding_of(&gzip), None, "FLG 0: no FEXTRA");
                gzip.len()
            })
            .collect();
        assert_eq!(lengths.len(), 1);
    }
}

#[test]
fn bounds_above_the_extra_field_limit_are_capped() {
    let json = Bytes::from(json_of_size(1000));
    let layer = GzipLayer::new().random_padding(u16::MAX);
    for _ in 0..10 {
        let gzip = compress_whole(&layer, &json);
        assert!(padding_of(&gzip).unwrap() <= 65_531);
        assert_eq!(gunzip(&gzip), json);
    }
}

fn events(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!(
                "data: {{\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"delta\":{{\"content\":\" token{i}\"}}}}]}}\n\n"
            )
            .into_bytes()
        })
        .collect()
}

fn padded_stream_layers() -> Vec<(&'static str, GzipLayer)> {
    let sse = || GzipLayer::new().compress_sse(true).random_padding(64);
    vec![
        ("padded", sse()),
        (
            "padded, hibernating at every stall",
            sse().hibernate_after(std::time::Duration::ZERO),
        ),
        (
            "padded, every frame",
            sse().flush_policy(FlushPolicy::EveryFrame),
        ),
        ("padded, level 1", sse().level(1)),
    ]
}

#[test]
fn padded_streams_decode_after_every_flushed_frame_with_flate2() {
    let chunks = events(40);
    for (name, layer) in padded_stream_layers() {
        let (frames, held) = frames_with_stalls(&layer, SSE, &chunks);
        assert_eq!(
            frames.len(),
            chunks.len() + 1,
            "{name}: one frame per stall"
        );
        assert!(padding_of(&frames[0]).is_some(), "{name}: padded header");
        let mut decoder = StreamingDecoder::default();
        let mut sent = Vec::new();
        for (k, chunk) in chunks.iter().enumerate() {
            sent.extend_from_slice(chunk);
            assert_eq!(decoder.push(&frames[k]), &sent[..], "{name}: frame {k}");
        }
        decoder.push(&frames[chunks.len()]);
        let whole: Vec<u8> = frames.concat();
        assert_eq!(gunzip(&whole), sent, "{name}: the whole member");
        if name.contains("hibernating") {
            assert!(
                held[..chunks.len()].iter().all(|held| !held),
                "{name}: the deflate state was dropped at every stall"
            );
        }
    }
}

#[test]
fn a_padded_empty_body_is_a_padded_empty_member() {
    let layer = GzipLayer::new().compress_sse(true).random_padding(64);
    let mut seen = BTreeSet::new();
    for _ in 0..50 {
        let (frames, _) = frames_with_stalls(&layer, SSE, &[]);
        assert_eq!(frames.len(), 1);
        seen.insert(padding_of(&frames[0]).expect("padded"));
        assert_eq!(frames[0].len(), 20 + 6 + padding_of(&frames[0]).unwrap());
        assert_eq!(gunzip(&frames[0]), b"");
    }
    assert!(seen.len() > 10, "the empty member's padding varies too");
}

// ---------------------------------------------------------------------------------------------
// CPython's zlib, frame by frame
// ---------------------------------------------------------------------------------------------

#[test]
fn python_zlib_decodes_each_flushed_frame_of_padded_streams() {
    let chunks = events(30);
    for (name, layer) in padded_stream_layers() {
        let (frames, _) = frames_with_stalls(&layer, SSE, &chunks);
        assert!(padding_of(&frames[0]).is_some());
        let (decoded, eof) = python::decode(&frames);
        assert!(eof, "{name}: the gzip member is complete");
        for (k, chunk) in chunks.iter().enumerate() {
            assert_eq!(&decoded[k], chunk, "{name}: frame {k} decodes to chunk {k}");
        }
        assert!(decoded[chunks.len()].is_empty());
    }
}

#[test]
fn python_zlib_decodes_padded_whole_and_empty_bodies() {
    let json = Bytes::from(json_of_size(20_000));
    let layer = GzipLayer::new().random_padding(1000);
    let whole = compress_whole(&layer, &json);
    assert!(padding_of(&whole).is_some());
    let (decoded, eof) = python::decode(&[whole]);
    assert!(eof);
    assert_eq!(decoded[0], json);

    let (frames, _) = frames_with_stalls(
        &GzipLayer::new().compress_sse(true).random_padding(1000),
        SSE,
        &[],
    );
    assert!(padding_of(&frames[0]).is_some());
    let (decoded, eof) = python::decode(&frames);
    assert!(eof, "the padded empty member is complete");
    assert!(decoded.iter().all(Vec::is_empty));
}
