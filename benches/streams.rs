//! Issue 4, benchmark 3 (streams): an LLM token stream sent with compression opted in, the handler
//! pausing (`Pending`) after every event so that every event is flushed to the client on its own.
//!
//! Streams: 500 OpenAI chat-completion chunk events as SSE (`text/event-stream`, about 258 B per
//! event) and 500 Ollama `/api/generate` NDJSON lines (about 96 B per line), both generated
//! deterministically in `common`. For each flush policy and levels 1, 6 and 9:
//! - bytes on the wire per event (whole gzip member / events; and the median flushed frame, which
//!   leaves out the header, the first events that fill the window, and the trailer), printed and
//!   written to `target/bench-results/stream_bytes_<backend>.csv`;
//! - CPU per event: criterion times one whole stream (a fresh response: compressor creation,
//!   500 events, the end of the member) with `Throughput::Elements(500)`.
//!
//! With a stall after every event both policies flush once per event, so they produce the same
//! bytes; the extra `burst` rows (5 events back to back, then a stall) show where they differ.
//!
//! Run: `cargo bench --bench streams`.
//!
//! `--figures` (used by `scripts/figures.sh`): skips criterion and prints what `FIGURES.md`
//! quotes: bytes per event (also with HTTP/1.1 chunked framing), and CPU per SSE event at levels
//! 1 and 6 and uncompressed, in interleaved rounds.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{
    call, drain, drain_with, gunzip, handler, median, ollama_ndjson_lines, openai_sse_events, ours,
    request, write_csv, Stalling, BACKEND,
};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use tower::Layer;
use tower_gzip::{FlushPolicy, GzipLayer};

const EVENTS: usize = 500;
const LEVELS: [u32; 3] = [1, 6, 9];
const POLICIES: [(FlushPolicy, &str); 2] = [
    (FlushPolicy::OnStall, "OnStall"),
    (FlushPolicy::EveryFrame, "EveryFrame"),
];

struct Stream {
    name: &'static str,
    content_type: &'static str,
    events: Arc<[Bytes]>,
}

fn streams() -> [Stream; 2] {
    [
        Stream {
            name: "sse-openai",
            content_type: "text/event-stream",
            events: openai_sse_events(EVENTS).into(),
        },
        Stream {
            name: "ndjson-ollama",
            content_type: "application/x-ndjson",
            events: ollama_ndjson_lines(EVENTS).into(),
        },
    ]
}

fn layer(level: u32, policy: FlushPolicy) -> GzipLayer {
    GzipLayer::new()
        .compress_sse(true)
        .level(level)
        .flush_policy(policy)
}

/// Sends the stream through the layer; returns every data frame the client receives.
fn frames(stream: &Stream, layer: &GzipLayer, burst: usize) -> Vec<Bytes> {
    frames_for(stream, layer, burst, true)
}

/// Like [`frames`], for a client that accepts gzip or not.
fn frames_for(stream: &Stream, layer: &GzipLayer, burst: usize, gzip: bool) -> Vec<Bytes> {
    let events = stream.events.clone();
    let mut svc = ours(
        layer,
        handler(stream.content_type, move || {
            Stalling::new(events.clone(), burst, true)
        }),
    );
    let response = call(&mut svc, request(gzip));
    assert_eq!(response.headers().contains_key("content-encoding"), gzip);
    let mut frames = Vec::new();
    drain_with(response.into_body(), |frame: &Bytes| {
        frames.push(frame.clone())
    });
    frames
}

fn byte_report(streams: &[Stream]) {
    let mut rows = vec![[
        "backend",
        "stream",
        "events",
        "input_bytes_per_event",
        "policy",
        "level",
        "burst",
        "frames",
        "total_bytes",
        "bytes_per_event",
        "median_frame_bytes",
        "ratio",
    ]
    .map(String::from)
    .to_vec()];
    println!("\nstream bytes on the wire, backend {BACKEND}");
    println!(
        "{:<14} {:>6} {:<10} {:>5} {:>5} {:>7} {:>9} {:>10} {:>12} {:>7}",
        "stream",
        "in/ev",
        "policy",
        "level",
        "burst",
        "frames",
        "total",
        "B/event",
        "median frame",
        "ratio"
    );
    for stream in streams {
        let input: usize = stream.events.iter().map(Bytes::len).sum();
        let per_event_in = input as f64 / stream.events.len() as f64;
        let expected: Vec<u8> = stream.events.iter().flat_map(|e| e.to_vec()).collect();
        for burst in [1, 5] {
            for (policy, policy_name) in POLICIES {
                for level in LEVELS {
                    let frames = frames(stream, &layer(level, policy), burst);
                    let all: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
                    assert_eq!(gunzip(&all), expected, "round trip");
                    if burst == 1 {
                        // One frame per event (each one flushed), plus the trailer frame.
                        assert_eq!(frames.len(), stream.events.len() + 1);
                    }
                    let mut steady: Vec<f64> = frames
                        .iter()
                        .skip(10)
                        .take(frames.len().saturating_sub(11))
                        .map(|f| f.len() as f64)
                        .collect();
                    let median_frame = median(&mut steady);
                    let per_event = all.len() as f64 / stream.events.len() as f64;
                    println!(
                        "{:<14} {:>6.1} {:<10} {:>5} {:>5} {:>7} {:>9} {:>10.2} {:>12.1} {:>7.4}",
                        stream.name,
                        per_event_in,
                        policy_name,
                        level,
                        burst,
                        frames.len(),
                        all.len(),
                        per_event,
                        median_frame,
                        all.len() as f64 / input as f64
                    );
                    rows.push(vec![
                        BACKEND.to_string(),
                        stream.name.to_string(),
                        stream.events.len().to_string(),
                        format!("{per_event_in:.1}"),
                        policy_name.to_string(),
                        level.to_string(),
                        burst.to_string(),
                        frames.len().to_string(),
                        all.len().to_string(),
                        format!("{per_event:.2}"),
                        format!("{median_frame:.1}"),
                        format!("{:.4}", all.len() as f64 / input as f64),
                    ]);
                }
            }
        }
    }
    println!();
    write_csv(&format!("stream_bytes_{BACKEND}.csv"), &rows);
}

/// Bytes per event of a raw deflate stream (plus 18 bytes of gzip framing) flushed with `flush`
/// after every event; every flush is checked to make all events so far decodable by an
/// independent raw inflate.
fn raw_bytes_per_event(events: &[Bytes], level: u32, flush: flate2::FlushCompress) -> f64 {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
    let mut deflate = Compress::new(Compression::new(level), false);
    let mut inflate = Decompress::new(false);
    let mut out = vec![0u8; 1 << 16];
    let mut decoded = vec![0u8; 1 << 20];
    let mut sent = Vec::new();
    let mut wire = 0usize;
    for event in events {
        let before = deflate.total_out();
        deflate.compress(event, &mut out, flush).unwrap();
        assert_eq!(deflate.total_in() as usize, sent.len() + event.len());
        let produced = (deflate.total_out() - before) as usize;
        assert!(produced < out.len());
        wire += produced;
        sent.extend_from_slice(event);
        let start = inflate.total_out() as usize;
        inflate
            .decompress(
                &out[..produced],
                &mut decoded[start..],
                FlushDecompress::Sync,
            )
            .unwrap();
        assert_eq!(
            &decoded[..inflate.total_out() as usize],
            &sent[..],
            "every event decodable right after its flush"
        );
    }
    let before = deflate.total_out();
    deflate
        .compress(&[], &mut out, FlushCompress::Finish)
        .unwrap();
    wire += (deflate.total_out() - before) as usize + 18;
    wire as f64 / events.len() as f64
}

/// The codec-level question behind a possible src/ change: bytes per event when each event is
/// followed by a sync flush (what `GzipEncoder::flush` does) or a partial flush, using flate2's
/// raw `Compress` directly (plus 18 bytes of gzip framing). Every flush is checked to make all
/// events so far decodable by an independent raw inflate.
fn flush_kind_report(streams: &[Stream]) {
    use flate2::FlushCompress;
    println!("raw deflate, one flush per event (burst 1): sync vs partial flush");
    println!(
        "{:<14} {:>5} {:>12} {:>15}",
        "stream", "level", "sync B/ev", "partial B/ev"
    );
    let mut rows = vec![[
        "backend",
        "stream",
        "level",
        "sync_bytes_per_event",
        "partial_bytes_per_event",
    ]
    .map(String::from)
    .to_vec()];
    for stream in streams {
        for level in LEVELS {
            let per_event = [FlushCompress::Sync, FlushCompress::Partial]
                .map(|flush| raw_bytes_per_event(&stream.events, level, flush));
            println!(
                "{:<14} {:>5} {:>12.2} {:>15.2}",
                stream.name, level, per_event[0], per_event[1]
            );
            rows.push(vec![
                BACKEND.to_string(),
                stream.name.to_string(),
                level.to_string(),
                format!("{:.2}", per_event[0]),
                format!("{:.2}", per_event[1]),
            ]);
        }
    }
    println!();
    write_csv(&format!("stream_flush_kind_{BACKEND}.csv"), &rows);
}

type Case<'a> = (String, Box<dyn FnMut() -> usize + 'a>);

/// CPU per event measured in interleaved rounds (each round sends every configuration's whole
/// stream once, in rotating order), so the machine's background load hits all alike. Printed
/// and written to `target/bench-results/stream_cpu_<backend>.csv`; criterion measures the same
/// cases one after another below.
fn interleaved_cpu(streams: &[Stream]) {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rounds = if smoke { 1 } else { 31 };
    let mut cases: Vec<Case<'_>> = Vec::new();
    for stream in streams {
        let configs = std::iter::once(None).chain(
            POLICIES
                .iter()
                .flat_map(|&(policy, name)| LEVELS.map(|level| Some((policy, name, level)))),
        );
        for config in configs {
            let events = stream.events.clone();
            let (layer, gzip, label) = match config {
                None => (
                    layer(6, FlushPolicy::OnStall),
                    false,
                    "identity".to_string(),
                ),
                Some((policy, name, level)) => {
                    (layer(level, policy), true, format!("{name} L{level}"))
                }
            };
            let mut svc = ours(
                &layer,
                handler(stream.content_type, move || {
                    Stalling::new(events.clone(), 1, true)
                }),
            );
            cases.push((
                format!("{} {label}", stream.name),
                Box::new(move || drain(call(&mut svc, request(gzip)).into_body()).bytes),
            ));
        }
    }
    let n = cases.len();
    for (_, f) in cases.iter_mut() {
        std::hint::black_box(f());
    }
    let mut us: Vec<Vec<f64>> = vec![Vec::new(); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let start = std::time::Instant::now();
            std::hint::black_box((cases[i].1)());
            us[i].push(start.elapsed().as_secs_f64() * 1e6 / EVENTS as f64);
        }
    }
    println!("CPU per event ({rounds} interleaved rounds, whole 500-event stream per run incl. compressor creation), backend {BACKEND}");
    let mut rows = vec![["backend", "case", "median_us_per_event", "p25", "p75"]
        .map(String::from)
        .to_vec()];
    for (i, (name, _)) in cases.iter().enumerate() {
        let mut v = us[i].clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        println!(
            "  {name:<30} {:>8.3} us/event  [{:.3}, {:.3}]",
            q(0.5),
            q(0.25),
            q(0.75)
        );
        rows.push(vec![
            BACKEND.to_string(),
            name.clone(),
            format!("{:.3}", q(0.5)),
            format!("{:.3}", q(0.25)),
            format!("{:.3}", q(0.75)),
        ]);
    }
    println!();
    write_csv(&format!("stream_cpu_{BACKEND}.csv"), &rows);
}

fn stream_cpu(c: &mut Criterion) {
    let streams = streams();
    byte_report(&streams);
    flush_kind_report(&streams);
    interleaved_cpu(&streams);

    for stream in &streams {
        let mut group = c.benchmark_group(format!("stream_cpu_{}", stream.name));
        group.throughput(Throughput::Elements(stream.events.len() as u64));

        // The same stream passed through uncompressed (client without gzip): the floor.
        let events = stream.events.clone();
        let mut svc = ours(
            &layer(6, FlushPolicy::OnStall),
            handler(stream.content_type, move || {
                Stalling::new(events.clone(), 1, true)
            }),
        );
        group.bench_function(BenchmarkId::new(format!("identity-{BACKEND}"), "-"), |b| {
            b.iter(|| drain(call(&mut svc, request(false)).into_body()).bytes)
        });

        for (policy, policy_name) in POLICIES {
            for level in LEVELS {
                let events = stream.events.clone();
                let mut svc = ours(
                    &layer(level, policy),
                    handler(stream.content_type, move || {
                        Stalling::new(events.clone(), 1, true)
                    }),
                );
                group.bench_function(
                    BenchmarkId::new(format!("{policy_name}-{BACKEND}"), format!("L{level}")),
                    |b| b.iter(|| drain(call(&mut svc, request(true)).into_body()).bytes),
                );
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = stream_cpu
}
/// HTTP/1.1 bytes of a body sent as these frames: one chunk per frame (`<hex len>\r\n<data>\r\n`)
/// and the last chunk (`0\r\n\r\n`).
fn chunked_len(frames: &[Bytes]) -> usize {
    frames
        .iter()
        .map(|f| format!("{:x}", f.len()).len() + 4 + f.len())
        .sum::<usize>()
        + 5
}

/// Figures mode: what `FIGURES.md` quotes about token streams, from one process (one run).
fn figures() {
    let rounds = if common::quick_mode() { 2 } else { 21 };
    let streams = streams();
    for stream in &streams {
        let name = if stream.name.starts_with("sse") {
            "sse"
        } else {
            "ndjson"
        };
        let events = stream.events.len() as f64;
        let input: usize = stream.events.iter().map(Bytes::len).sum();
        let expected: Vec<u8> = stream.events.iter().flat_map(|e| e.to_vec()).collect();
        common::figure(&format!("stream.{name}.event_bytes"), input as f64 / events);
        // Uncompressed (client without gzip): every event passes through as its own frame.
        let plain = frames_for(stream, &layer(6, FlushPolicy::OnStall), 1, false);
        common::figure(
            &format!("stream.{name}.identity.h1_bytes_per_event"),
            chunked_len(&plain) as f64 / events,
        );
        for level in LEVELS {
            let layer = GzipLayer::new().compress_sse(true).level(level);
            let frames = frames(stream, &layer, 1);
            let all: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
            assert_eq!(gunzip(&all), expected, "round trip");
            let key = format!("stream.{name}.L{level}");
            common::figure(&format!("{key}.bytes_per_event"), all.len() as f64 / events);
            common::figure(
                &format!("{key}.h1_bytes_per_event"),
                chunked_len(&frames) as f64 / events,
            );
            common::figure(
                &format!("{key}.input_over_output"),
                input as f64 / all.len() as f64,
            );
        }
        // Bytes per event once the window has warmed up (events 10 to the last), each event
        // produced then paused, ours against tower-http at the same level in the same run.
        let steady = |frames: &[Bytes]| {
            let last = stream.events.len().min(frames.len());
            let bytes: usize = frames[10..last].iter().map(Bytes::len).sum();
            bytes as f64 / (last - 10) as f64
        };
        for level in LEVELS {
            let ours_frames = frames(stream, &GzipLayer::new().compress_sse(true).level(level), 1);
            let events = stream.events.clone();
            let mut tower = common::tower_http_layer(level as i32)
                .compress_when(|_, _, _: &http::HeaderMap, _: &http::Extensions| true)
                .layer(handler(stream.content_type, move || {
                    Stalling::new(events.clone(), 1, true)
                }));
            let mut tower_frames = Vec::new();
            let tower_body = call(&mut tower, request(true)).into_body();
            drain_with(tower_body, |frame: &Bytes| tower_frames.push(frame.clone()));
            let tower_all: Vec<u8> = tower_frames.iter().flat_map(|f| f.to_vec()).collect();
            assert_eq!(gunzip(&tower_all), expected, "tower-http round trip");
            common::figure(
                &format!("stream.{name}.L{level}.steady_bytes_per_event"),
                steady(&ours_frames),
            );
            common::figure(
                &format!("stream.{name}.L{level}.tower_http_steady_bytes_per_event"),
                steady(&tower_frames),
            );
        }
        let burst = frames(stream, &GzipLayer::new().compress_sse(true), 5);
        let burst_bytes: usize = burst.iter().map(Bytes::len).sum();
        common::figure(
            &format!("stream.{name}.L6.burst5_bytes_per_event"),
            burst_bytes as f64 / events,
        );
        common::figure(
            &format!("stream.{name}.L6.raw_sync_flush_bytes_per_event"),
            raw_bytes_per_event(&stream.events, 6, flate2::FlushCompress::Sync),
        );
    }

    codes_figures();

    // CPU per SSE event: whole 500-event streams (compressor creation included), interleaved.
    let sse = &streams[0];
    let mut cases: Vec<Case<'_>> = Vec::new();
    for (name, level, gzip) in [("identity", 6, false), ("L1", 1, true), ("L6", 6, true)] {
        let events = sse.events.clone();
        let mut svc = ours(
            &GzipLayer::new().compress_sse(true).level(level),
            handler(sse.content_type, move || {
                Stalling::new(events.clone(), 1, true)
            }),
        );
        cases.push((
            name.to_string(),
            Box::new(move || drain(call(&mut svc, request(gzip)).into_body()).bytes),
        ));
    }
    for (_, f) in cases.iter_mut() {
        std::hint::black_box(f());
    }
    let n = cases.len();
    let mut us: Vec<Vec<f64>> = vec![Vec::new(); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let cpu = common::thread_cpu_time_ns();
            std::hint::black_box((cases[i].1)());
            let ns = common::thread_cpu_time_ns() - cpu;
            us[i].push(ns as f64 / 1e3 / sse.events.len() as f64);
        }
    }
    let mut l6_over_l1: Vec<f64> = (0..rounds).map(|r| us[2][r] / us[1][r]).collect();
    for (i, (name, _)) in cases.iter().enumerate() {
        common::figure(
            &format!("stream.sse.{name}.cpu_us_per_event"),
            median(&mut us[i].clone()),
        );
    }
    common::figure("stream.sse.cpu_L6_over_L1", median(&mut l6_over_l1));
}

/// Raw zlib-rs at level 6 (memory level 7, as the layer): `events` each compressed and flushed,
/// with fixed codes and `Z_BLOCK` or with dynamic codes and a partial flush. Returns the deflate
/// bytes; every event is checked to be decodable by an independent inflater right after its
/// flush.
fn raw_zlib_rs_bytes(events: &[Bytes], fixed: bool) -> usize {
    use flate2::{Decompress, FlushDecompress};
    use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Strategy};
    let (strategy, flush) = if fixed {
        (Strategy::Fixed, DeflateFlush::Block)
    } else {
        (Strategy::Default, DeflateFlush::PartialFlush)
    };
    let mut deflate = Deflate::new_with_config(DeflateConfig {
        level: 6,
        window_bits: -15,
        mem_level: 7,
        strategy,
        ..DeflateConfig::default()
    });
    let mut inflate = Decompress::new(false);
    let (mut out, mut decoded) = (vec![0u8; 1 << 17], vec![0u8; 1 << 17]);
    let mut wire = 0;
    for event in events {
        let before = deflate.total_out();
        deflate.compress(event, &mut out, flush).unwrap();
        assert_eq!(deflate.total_in(), inflate.total_out() + event.len() as u64);
        let produced = (deflate.total_out() - before) as usize;
        wire += produced;
        let start = inflate.total_out();
        inflate
            .decompress(&out[..produced], &mut decoded, FlushDecompress::Sync)
            .unwrap();
        let got = (inflate.total_out() - start) as usize;
        assert_eq!(
            &decoded[..got],
            &event[..],
            "decodable right after its flush"
        );
    }
    wire
}

/// Fixed codes with `Z_BLOCK` against dynamic codes with a partial flush, on the bench JSON cut
/// into events of a few sizes: the two sides of the layer's 512-bytes-per-flush switch. And the
/// layer itself on 2 KiB events (it switches to dynamic codes) against raw dynamic codes.
fn codes_figures() {
    let json = common::json_document(1 << 20);
    for size in [384usize, 512, 2048] {
        let events: Vec<Bytes> = json.chunks(size).map(Bytes::copy_from_slice).collect();
        let dynamic = raw_zlib_rs_bytes(&events, false);
        common::figure(
            &format!("stream.json{size}.fixed_over_dynamic"),
            raw_zlib_rs_bytes(&events, true) as f64 / dynamic as f64,
        );
        if size == 2048 {
            let stream = Stream {
                name: "json2048",
                content_type: "application/x-ndjson",
                events: events.clone().into(),
            };
            let frames = frames(&stream, &GzipLayer::new(), 1);
            let all: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
            assert_eq!(gunzip(&all), json[..], "round trip");
            // The raw stream plus the gzip header and trailer the layer adds.
            common::figure(
                "stream.json2048.ours_over_raw_dynamic",
                all.len() as f64 / (dynamic + 18) as f64,
            );
        }
    }
}

fn main() {
    if common::figures_mode() {
        figures();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
