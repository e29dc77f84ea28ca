//! The cost of watching: [`GzipMetrics`] counters and the `on_response_end` callback (which also
//! times the compressor), against the same layer with neither, on three shapes of response:
//! bulk (~1 MiB of JSON, one ready body), small (4 KB of JSON) and a token stream (300
//! OpenAI-style SSE events, each followed by a stall and so a flush).
//!
//! Each figure is a ratio of times measured in the same run, interleaved round by round
//! (`time(with) / time(without)`, median over rounds): 1.00 means no measurable cost.
//!
//! Run: `cargo bench --bench observability` (criterion). `--figures` (used by
//! `scripts/figures.sh`) prints the ratios as `FIGURE` lines. Without `--bench` on the command
//! line (`cargo test --bench observability`) it runs a smoke test that checks the round trip and
//! the reported figures.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use common::{
    call, collect, figure, figures_mode, gunzip, handler, json_document, openai_sse_events, ours,
    quick_mode, request, Stalling,
};
use criterion::Criterion;
use http_body_util::Full;
use tower_gzip::{GzipLayer, GzipMetrics, Outcome};

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

/// The three ways to run the layer.
const VARIANTS: [&str; 3] = ["off", "metrics", "metrics+callback"];

fn layer(variant: &str, metrics: &GzipMetrics, sink: &Arc<AtomicU64>) -> GzipLayer {
    let layer = GzipLayer::new().compress_sse(true);
    match variant {
        "off" => layer,
        // For `--run` only: the idle timer's cost is what "off" pays over this.
        "never_hibernate" => layer.never_hibernate(),
        "metrics" => layer.metrics(metrics.clone()),
        _ => {
            let sink = sink.clone();
            layer
                .metrics(metrics.clone())
                .on_response_end(move |stats| {
                    sink.fetch_add(stats.bytes_out, Ordering::Relaxed);
                })
        }
    }
}

/// One response of `shape` through `layer`; returns the compressed bytes.
fn respond(
    shape: &str,
    layer: &GzipLayer,
    json: &Bytes,
    small: &Bytes,
    events: &Arc<[Bytes]>,
) -> Vec<u8> {
    match shape {
        "bulk" => {
            let json = json.clone();
            let mut svc = ours(
                layer,
                handler("application/json", move || Full::new(json.clone())),
            );
            collect(call(&mut svc, request(true)).into_body())
        }
        // For profiling (`--run chunks7 off N`): 1 MiB of JSON as 7-byte ready frames.
        "chunks7" => {
            let json = json.clone();
            let mut svc = ours(
                layer,
                handler("application/json", move || {
                    common::Chunked::new(json.clone(), 7)
                }),
            );
            collect(call(&mut svc, request(true)).into_body())
        }
        "small" => {
            let small = small.clone();
            let mut svc = ours(
                layer,
                handler("application/json", move || Full::new(small.clone())),
            );
            collect(call(&mut svc, request(true)).into_body())
        }
        _ => {
            let events = events.clone();
            let mut svc = ours(
                layer,
                handler("text/event-stream", move || {
                    Stalling::new(events.clone(), 1, true)
                }),
            );
            collect(call(&mut svc, request(true)).into_body())
        }
    }
}

struct Inputs {
    json: Bytes,
    small: Bytes,
    events: Arc<[Bytes]>,
}

impl Inputs {
    fn new() -> Self {
        Self {
            json: json_document(1 << 20),
            small: json_document(4000).slice(..4000),
            events: openai_sse_events(300).into(),
        }
    }

    fn expected(&self, shape: &str) -> Vec<u8> {
        match shape {
            "bulk" => self.json.to_vec(),
            "small" => self.small.to_vec(),
            _ => self.events.iter().flat_map(|e| e.iter().copied()).collect(),
        }
    }
}

const SHAPES: [&str; 3] = ["bulk", "small", "token_stream"];

/// Smoke run: every shape and variant round-trips, and the counters agree with the bytes.
fn smoke(inputs: &Inputs) {
    for shape in SHAPES {
        for variant in VARIANTS {
            let metrics = GzipMetrics::new();
            let sink = Arc::new(AtomicU64::new(0));
            let layer = layer(variant, &metrics, &sink);
            let out = respond(shape, &layer, &inputs.json, &inputs.small, &inputs.events);
            assert_eq!(gunzip(&out), inputs.expected(shape), "{shape} {variant}");
            if variant != "off" {
                assert_eq!(metrics.responses(Outcome::Gzip), 1, "{shape} {variant}");
                assert_eq!(
                    metrics.output_bytes(),
                    out.len() as u64,
                    "{shape} {variant}"
                );
                assert_eq!(metrics.input_bytes(), inputs.expected(shape).len() as u64);
                assert_eq!(metrics.live_streams(), 0);
            }
            if variant == "metrics+callback" {
                assert_eq!(sink.load(Ordering::Relaxed), out.len() as u64);
            }
        }
    }
    println!("observability smoke run: 3 shapes x 3 variants round-trip, counters match");
}

/// Interleaved rounds: per round, `iters` responses per variant; the ratio to "off" per round,
/// median over rounds.
fn ratios(inputs: &Inputs, rounds: usize) {
    for shape in SHAPES {
        let iters = match shape {
            "bulk" => 3,
            "small" => 400,
            _ => 20,
        };
        let metrics = GzipMetrics::new();
        let sink = Arc::new(AtomicU64::new(0));
        let layers: Vec<GzipLayer> = VARIANTS.iter().map(|v| layer(v, &metrics, &sink)).collect();
        let mut per_variant: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
        for round in 0..rounds {
            let mut times = [0f64; 3];
            // Rotate the order each round so no variant always runs first.
            for k in 0..VARIANTS.len() {
                let i = (k + round) % VARIANTS.len();
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(respond(
                        shape,
                        &layers[i],
                        &inputs.json,
                        &inputs.small,
                        &inputs.events,
                    ));
                }
                times[i] = started.elapsed().as_secs_f64();
            }
            for i in 1..VARIANTS.len() {
                per_variant[i].push(times[i] / times[0]);
            }
        }
        for (i, variant) in VARIANTS.iter().enumerate().skip(1) {
            let mut values = per_variant[i].clone();
            let ratio = common::median(&mut values);
            let key = format!("observability_{shape}_{}_vs_off", variant.replace('+', "_"));
            figure(&key, ratio);
        }
    }
}

/// `--run SHAPE VARIANT N`: N responses, nothing else, for an instruction counter
/// (`valgrind --tool=callgrind`), which the machine's noise does not touch.
fn run_only(inputs: &Inputs, args: &[String]) {
    let shape = args[0].as_str();
    let variant = args[1].as_str();
    let n: usize = args[2].parse().expect("N");
    // References for the small shape, counted the same way: tower-http's layer, no layer, and a
    // raw deflate (a new state, one call) on the same bytes.
    if shape == "small" && ["tower_http", "no_layer", "raw"].contains(&variant) {
        for _ in 0..n {
            let small = inputs.small.clone();
            let make = move || Full::new(small.clone());
            let out = match variant {
                "tower_http" => collect(
                    call(
                        &mut common::tower_http(6, handler("application/json", make)),
                        request(true),
                    )
                    .into_body(),
                ),
                "no_layer" => {
                    collect(call(&mut handler("application/json", make), request(true)).into_body())
                }
                _ => common::flate2_gzip(&inputs.small, 6),
            };
            black_box(out);
        }
        return;
    }
    let metrics = GzipMetrics::new();
    let sink = Arc::new(AtomicU64::new(0));
    let layer = layer(variant, &metrics, &sink);
    for _ in 0..n {
        black_box(respond(
            shape,
            &layer,
            &inputs.json,
            &inputs.small,
            &inputs.events,
        ));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--run") {
        return run_only(&Inputs::new(), &args[i + 1..]);
    }
    let inputs = Inputs::new();
    if figures_mode() {
        ratios(&inputs, if quick_mode() { 3 } else { 15 });
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        smoke(&inputs);
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    for shape in SHAPES {
        let mut group = criterion.benchmark_group(format!("observability/{shape}"));
        for variant in VARIANTS {
            let metrics = GzipMetrics::new();
            let sink = Arc::new(AtomicU64::new(0));
            let layer = layer(variant, &metrics, &sink);
            group.bench_function(variant, |b| {
                b.iter(|| respond(shape, &layer, &inputs.json, &inputs.small, &inputs.events))
            });
        }
        group.finish();
    }
    criterion.final_summary();
}
