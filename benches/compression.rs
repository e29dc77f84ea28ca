//! Issue 4, benchmark 1 (bulk): about 1 MiB of realistic JSON compressed at level 6, polled to the
//! end, for chunk sizes 7 B, 64 B, 1 KiB, 16 KiB and one chunk.
//!
//! Contenders, all in one process and therefore on one flate2 backend (see `BACKEND`):
//! - `ours`: `Gzip<service_fn>` (built with `GzipLayer::new().level(6)`), response body polled to
//!   the end; `ours-never-hibernate`: the same with `.never_hibernate()`;
//! - `tower-http`: `CompressionLayer` gzip only, `CompressionLevel::Precise(6)`, same handler;
//! - `flate2-writes`: `flate2::write::GzEncoder` fed the same chunks with `write_all`;
//! - `flate2-oneshot`: `GzEncoder`, the whole input in one `write_all` (the ceiling);
//! - `deflate-oneshot`: raw `Compress::compress` of the whole input into a preallocated buffer plus
//!   crc32fast (what a gzip member costs without any framing code);
//! - `no-layer`: the inner body drained without any middleware (the cost of the frames
//!   themselves, which no middleware can avoid).
//!
//! Run `cargo bench --bench compression` (zlib-rs) and
//! `cargo bench --no-default-features --features miniz --bench compression` (miniz_oxide, the
//! backend tower-http users get by default); ids carry the backend so both runs coexist under
//! `target/criterion/bulk_json_1MiB/`. `scripts/plot_throughput.py` turns them into a table and
//! `docs/throughput.svg`. Output sizes are printed and written to
//! `target/bench-results/bulk_sizes_<backend>.csv`.
//!
//! Before criterion runs, `interleaved_ratios` measures the same contenders in interleaved rounds
//! and reports per-round ratios (`target/bench-results/bulk_ratios_<backend>.csv`): on a shared
//! machine they are far steadier than ratios of benchmarks measured one after another.
//!
//! `--figures` (used by `scripts/figures.sh`): skips criterion; measures the layer with its
//! default settings (`GzipLayer::new()`) against tower-http and flate2's one call in interleaved
//! rounds and prints the per-run medians of the per-round ratios, plus output sizes; the rounds
//! also drain the handler's body with no layer, for the frames' own cost.

mod common;

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use common::{
    call, collect, drain, flate2_gzip, gunzip, handler, json_document, ours, request, tower_http,
    write_csv, Chunked, BACKEND,
};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use flate2::{Compress, Compression, FlushCompress, Status};
use tower_gzip::GzipLayer;

const MIB: usize = 1 << 20;
const LEVEL: u32 = 6;
/// Chunk sizes of the sweep; the last one means "the whole body in one chunk".
const CHUNKS: [usize; 5] = [7, 64, 1024, 16 * 1024, usize::MAX];

fn chunk_label(chunk: usize) -> String {
    if chunk == usize::MAX {
        "one-chunk".to_string()
    } else {
        chunk.to_string()
    }
}

fn ours_bytes(json: &Bytes, chunk: usize) -> Vec<u8> {
    let data = json.clone();
    let mut svc = ours(
        &GzipLayer::new().level(LEVEL),
        handler("application/json", move || {
            Chunked::new(data.clone(), chunk)
        }),
    );
    let response = call(&mut svc, request(true));
    assert_eq!(response.headers()["content-encoding"], "gzip");
    collect(response.into_body())
}

fn tower_http_bytes(json: &Bytes, chunk: usize) -> Vec<u8> {
    let data = json.clone();
    let mut svc = tower_http(
        LEVEL as i32,
        handler("application/json", move || {
            Chunked::new(data.clone(), chunk)
        }),
    );
    let response = call(&mut svc, request(true));
    assert_eq!(response.headers()["content-encoding"], "gzip");
    collect(response.into_body())
}

fn flate2_writes(json: &[u8], chunk: usize) -> Vec<u8> {
    use std::io::Write;
    let mut enc =
        flate2::write::GzEncoder::new(Vec::with_capacity(json.len() / 2), Compression::new(LEVEL));
    for piece in json.chunks(chunk.min(json.len())) {
        enc.write_all(piece).unwrap();
    }
    enc.finish().unwrap()
}

/// Raw deflate of everything in one call into `out`, plus the CRC a gzip trailer needs.
fn deflate_oneshot(json: &[u8], out: &mut [u8]) -> (usize, u32) {
    let mut deflate = Compress::new(Compression::new(LEVEL), false);
    let status = deflate
        .compress(json, out, FlushCompress::Finish)
        .expect("deflate");
    assert!(
        matches!(status, Status::StreamEnd),
        "output buffer too small"
    );
    (deflate.total_out() as usize, crc32fast::hash(json))
}

/// Output sizes for every contender, checked to decode to the input.
fn size_report(json: &Bytes) {
    let reference = flate2_gzip(json, LEVEL);
    assert_eq!(gunzip(&reference), json[..]);
    let mut rows = vec![vec![
        "backend".to_string(),
        "chunk".to_string(),
        "input".to_string(),
        "ours".to_string(),
        "tower_http".to_string(),
        "flate2_writes".to_string(),
        "flate2_oneshot".to_string(),
    ]];
    println!(
        "\nbulk output sizes, {} B of JSON, level {LEVEL}, backend {BACKEND}",
        json.len()
    );
    println!(
        "{:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "chunk", "ours", "tower-http", "f2-writes", "f2-oneshot", "ours/oneshot"
    );
    for chunk in CHUNKS {
        let a = ours_bytes(json, chunk);
        let b = tower_http_bytes(json, chunk);
        let c = flate2_writes(json, chunk);
        for out in [&a, &b, &c] {
            assert_eq!(gunzip(out), json[..], "round trip, chunk {chunk}");
        }
        println!(
            "{:>10} {:>10} {:>10} {:>10} {:>10} {:>12.4}",
            chunk_label(chunk),
            a.len(),
            b.len(),
            c.len(),
            reference.len(),
            a.len() as f64 / reference.len() as f64
        );
        rows.push(vec![
            BACKEND.to_string(),
            chunk_label(chunk),
            json.len().to_string(),
            a.len().to_string(),
            b.len().to_string(),
            c.len().to_string(),
            reference.len().to_string(),
        ]);
    }
    let by_level: Vec<String> = [1, 6, 9]
        .iter()
        .map(|&level| format!("level {level}: {} B", flate2_gzip(json, level).len()))
        .collect();
    println!("flate2 one call by level: {}", by_level.join(", "));
    println!();
    write_csv(&format!("bulk_sizes_{BACKEND}.csv"), &rows);
}

type Contender<'a> = (&'static str, Box<dyn FnMut() -> usize + 'a>);

/// Same-run ratios that do not drift with the machine's background load: every round runs each
/// contender once (in rotating order), and ratios are taken within a round; the median over
/// `BULK_ROUNDS` rounds (default 31) is reported, with the spread of the middle half.
fn interleaved_ratios(json: &Bytes) {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = if smoke {
        1
    } else {
        std::env::var("BULK_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(31)
    };
    let mb = json.len() as f64 / 1e6;
    let mut rows = vec![[
        "backend",
        "chunk",
        "rounds",
        "ours_mbps",
        "ours_never_hibernate_mbps",
        "tower_http_mbps",
        "flate2_writes_mbps",
        "flate2_oneshot_mbps",
        "ours_over_oneshot",
        "ours_over_oneshot_p25",
        "ours_over_oneshot_p75",
        "ours_over_tower_http",
        "ours_over_tower_http_p25",
        "ours_over_tower_http_p75",
        "never_hibernate_over_oneshot",
    ]
    .map(String::from)
    .to_vec()];
    println!("interleaved rounds ({rounds}), level {LEVEL}, backend {BACKEND}: median MB/s and median per-round ratio [p25, p75]");
    println!(
        "{:>10} {:>7} {:>7} {:>7} {:>7} {:>7} {:>22} {:>22} {:>9}",
        "chunk",
        "ours",
        "ours-nh",
        "t-http",
        "f2-wr",
        "f2-1",
        "ours/flate2 one call",
        "ours/tower-http",
        "nh/f2-1"
    );
    for chunk in CHUNKS {
        let make_svc = |layer: GzipLayer| {
            let data = json.clone();
            ours(
                &layer,
                handler("application/json", move || {
                    Chunked::new(data.clone(), chunk)
                }),
            )
        };
        let mut a = make_svc(GzipLayer::new().level(LEVEL));
        let mut b = make_svc(GzipLayer::new().level(LEVEL).never_hibernate());
        let data = json.clone();
        let mut t = tower_http(
            LEVEL as i32,
            handler("application/json", move || {
                Chunked::new(data.clone(), chunk)
            }),
        );
        let mut contenders: Vec<Contender<'_>> = vec![
            (
                "ours",
                Box::new(move || drain(call(&mut a, request(true)).into_body()).bytes),
            ),
            (
                "ours-nh",
                Box::new(move || drain(call(&mut b, request(true)).into_body()).bytes),
            ),
            (
                "tower-http",
                Box::new(move || drain(call(&mut t, request(true)).into_body()).bytes),
            ),
            (
                "flate2-writes",
                Box::new(|| flate2_writes(json, chunk).len()),
            ),
            (
                "flate2-oneshot",
                Box::new(|| flate2_gzip(json, LEVEL).len()),
            ),
        ];
        let n = contenders.len();
        let mut secs: Vec<Vec<f64>> = vec![Vec::new(); n];
        for (_, f) in contenders.iter_mut() {
            black_box(f()); // warm-up
        }
        for round in 0..rounds {
            for k in 0..n {
                let i = (round + k) % n;
                let start = std::time::Instant::now();
                black_box((contenders[i].1)());
                secs[i].push(start.elapsed().as_secs_f64());
            }
        }
        let ratio = |x: usize, y: usize| -> (f64, f64, f64) {
            let mut r: Vec<f64> = (0..rounds).map(|k| secs[y][k] / secs[x][k]).collect();
            r.sort_by(|a, b| a.total_cmp(b));
            let q = |p: f64| r[((r.len() - 1) as f64 * p).round() as usize];
            (q(0.5), q(0.25), q(0.75))
        };
        let mbps: Vec<f64> = secs
            .iter()
            .map(|v| {
                let mut v = v.clone();
                v.sort_by(|a, b| a.total_cmp(b));
                mb / v[v.len() / 2]
            })
            .collect();
        let (r1, r1lo, r1hi) = ratio(0, 4);
        let (r2, r2lo, r2hi) = ratio(0, 2);
        let (r3, _, _) = ratio(1, 4);
        println!(
            "{:>10} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>7.3} [{:.3}, {:.3}] {:>7.3} [{:.3}, {:.3}] {:>9.3}",
            chunk_label(chunk),
            mbps[0],
            mbps[1],
            mbps[2],
            mbps[3],
            mbps[4],
            r1,
            r1lo,
            r1hi,
            r2,
            r2lo,
            r2hi,
            r3
        );
        let mut row = vec![BACKEND.to_string(), chunk_label(chunk), rounds.to_string()];
        row.extend(mbps.iter().map(|v| format!("{v:.1}")));
        row.extend(
            [r1, r1lo, r1hi, r2, r2lo, r2hi, r3]
                .iter()
                .map(|v| format!("{v:.3}")),
        );
        rows.push(row);
    }
    println!();
    write_csv(&format!("bulk_ratios_{BACKEND}.csv"), &rows);
}

fn bulk(c: &mut Criterion) {
    let json = json_document(MIB);
    size_report(&json);
    interleaved_ratios(&json);

    let mut group = c.benchmark_group("bulk_json_1MiB");
    group.throughput(Throughput::Bytes(json.len() as u64));

    group.bench_function(
        BenchmarkId::new(format!("flate2-oneshot-{BACKEND}"), "one-chunk"),
        |b| b.iter(|| flate2_gzip(black_box(&json), LEVEL).len()),
    );
    let mut out = vec![0u8; json.len() + 1024];
    group.bench_function(
        BenchmarkId::new(format!("deflate-oneshot-{BACKEND}"), "one-chunk"),
        |b| b.iter(|| deflate_oneshot(black_box(&json), &mut out)),
    );

    for chunk in CHUNKS {
        let label = chunk_label(chunk);

        // The inner body alone, drained without any middleware: the floor set by the frames.
        group.bench_function(BenchmarkId::new("no-layer", &label), |b| {
            b.iter(|| drain(Chunked::new(json.clone(), chunk)).bytes)
        });

        let data = json.clone();
        let mut svc = ours(
            &GzipLayer::new().level(LEVEL),
            handler("application/json", move || {
                Chunked::new(data.clone(), chunk)
            }),
        );
        group.bench_function(BenchmarkId::new(format!("ours-{BACKEND}"), &label), |b| {
            b.iter(|| drain(call(&mut svc, request(true)).into_body()).bytes)
        });

        // The same with hibernation support off (no copy of the last window of input is kept).
        let data = json.clone();
        let mut svc = ours(
            &GzipLayer::new().level(LEVEL).never_hibernate(),
            handler("application/json", move || {
                Chunked::new(data.clone(), chunk)
            }),
        );
        group.bench_function(
            BenchmarkId::new(format!("ours-never-hibernate-{BACKEND}"), &label),
            |b| b.iter(|| drain(call(&mut svc, request(true)).into_body()).bytes),
        );

        let data = json.clone();
        let mut svc = tower_http(
            LEVEL as i32,
            handler("application/json", move || {
                Chunked::new(data.clone(), chunk)
            }),
        );
        group.bench_function(
            BenchmarkId::new(format!("tower-http-{BACKEND}"), &label),
            |b| b.iter(|| drain(call(&mut svc, request(true)).into_body()).bytes),
        );

        group.bench_function(
            BenchmarkId::new(format!("flate2-writes-{BACKEND}"), &label),
            |b| b.iter(|| flate2_writes(black_box(&json), chunk).len()),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bulk
}
/// Figures mode: what `FIGURES.md` quotes about bulk bodies, from one process (one run).
fn figures() {
    let rounds = if common::quick_mode() { 2 } else { 11 };
    let json = json_document(MIB);
    let reference = flate2_gzip(&json, LEVEL);
    let service = |layer: GzipLayer, chunk: usize| {
        let data = json.clone();
        ours(
            &layer,
            handler("application/json", move || {
                Chunked::new(data.clone(), chunk)
            }),
        )
    };
    let tower = |chunk: usize| {
        let data = json.clone();
        tower_http(
            LEVEL as i32,
            handler("application/json", move || {
                Chunked::new(data.clone(), chunk)
            }),
        )
    };
    // Output sizes (deterministic), through the public API with the default settings.
    for chunk in CHUNKS {
        let label = chunk_label(chunk);
        let ours_out =
            collect(call(&mut service(GzipLayer::new(), chunk), request(true)).into_body());
        let tower_out = collect(call(&mut tower(chunk), request(true)).into_body());
        assert_eq!(gunzip(&ours_out), json[..]);
        assert_eq!(gunzip(&tower_out), json[..]);
        let size = |out: &[u8]| out.len() as f64 / reference.len() as f64;
        common::figure(&format!("bulk.{label}.size_over_flate2"), size(&ours_out));
        common::figure(
            &format!("bulk.{label}.tower_http_size_over_flate2"),
            size(&tower_out),
        );
    }
    let level = |level: u32| {
        let svc = &mut service(GzipLayer::new().level(level), usize::MAX);
        collect(call(svc, request(true)).into_body()).len() as f64
    };
    common::figure("bulk.level1_size_over_level6", level(1) / level(6));

    // Speed: every round runs each contender once, in rotating order; ratios within a round.
    let mb = json.len() as f64 / 1e6;
    for chunk in CHUNKS {
        let label = chunk_label(chunk);
        let mut a = service(GzipLayer::new(), chunk);
        let mut t = tower(chunk);
        let mut contenders: Vec<Box<dyn FnMut() -> usize + '_>> = vec![
            Box::new(move || drain(call(&mut a, request(true)).into_body()).bytes),
            Box::new(move || drain(call(&mut t, request(true)).into_body()).bytes),
            Box::new(|| flate2_gzip(&json, LEVEL).len()),
            // The frames alone: the handler's body drained with no layer at all.
            Box::new(|| drain(Chunked::new(json.clone(), chunk)).bytes),
        ];
        for f in contenders.iter_mut() {
            black_box(f()); // warm-up
        }
        let n = contenders.len();
        let mut secs: Vec<Vec<f64>> = vec![Vec::new(); n];
        // On-CPU time of the same calls: what a body costs its thread, whatever else the machine
        // runs at that moment; compared across the zlib-rs and miniz_oxide binaries.
        let mut cpu_ms: Vec<Vec<f64>> = vec![Vec::new(); n];
        for round in 0..rounds {
            for k in 0..n {
                let i = (round + k) % n;
                let cpu = common::thread_cpu_time_ns();
                let start = std::time::Instant::now();
                black_box((contenders[i])());
                secs[i].push(start.elapsed().as_secs_f64());
                cpu_ms[i].push((common::thread_cpu_time_ns() - cpu) as f64 / 1e6);
            }
        }
        // Ratios of on-CPU time within a round: the speed ratio on an otherwise idle core, and
        // not disturbed by another process preempting one of the calls.
        let ratio = |reference: usize| {
            let mut r: Vec<f64> = (0..rounds)
                .map(|k| cpu_ms[reference][k] / cpu_ms[0][k])
                .collect();
            common::median(&mut r)
        };
        let mbps = |i: usize| mb / common::median(&mut secs[i].clone());
        common::figure(&format!("bulk.{label}.ours_over_flate2"), ratio(2));
        // What a layer that cost nothing per frame would reach: it still has to poll every frame
        // (no layer's cost) and compress every byte (flate2's one call), so at best it runs at
        // flate2 / (flate2 + no layer) of flate2's speed.
        let mut floor: Vec<f64> = (0..rounds)
            .map(|k| cpu_ms[2][k] / (cpu_ms[2][k] + cpu_ms[3][k]))
            .collect();
        common::figure(
            &format!("bulk.{label}.frames_only_over_flate2"),
            common::median(&mut floor),
        );
        common::figure(&format!("bulk.{label}.ours_over_tower_http"), ratio(1));
        common::figure(&format!("bulk.{label}.ours_mbps"), mbps(0));
        common::figure(&format!("bulk.{label}.tower_http_mbps"), mbps(1));
        common::figure(&format!("bulk.{label}.flate2_mbps"), mbps(2));
        common::figure(
            &format!("bulk.{label}.ours_cpu_ms"),
            common::median(&mut cpu_ms[0]),
        );
        common::figure(
            &format!("bulk.{label}.tower_http_cpu_ms"),
            common::median(&mut cpu_ms[1]),
        );
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
