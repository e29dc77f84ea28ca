//! Issue 4, benchmark 2 (small responses): a 4 KB JSON response, with our layer, without any
//! layer, and with tower-http's `CompressionLayer` (gzip only, level 6).
//!
//! 1. Allocations per response, counted by a counting `#[global_allocator]`: one request through
//!    the service stack in-process (no network, no hyper), body polled to the end. The requests
//!    are built before counting starts, so only the middleware, handler and body are counted.
//! 2. Requests per second through a hyper 1.x HTTP/1.1 server on loopback. The server runs on one
//!    thread (a current-thread Tokio runtime) with three listeners, one per stack. The load
//!    generator is `wrk` (one thread, `SMALL_CONNS` keep-alive connections, `Accept-Encoding:
//!    gzip`): it is written in C and spends much less CPU per request than the server, so on a
//!    2-core machine the server thread is the bottleneck and gets a core to itself. Stacks are
//!    measured in interleaved rounds and compared round by round (the machine is shared, so
//!    ratios within a round are more stable than absolute rates). Server CPU per request is read
//!    from the server thread's `/proc/thread-self/schedstat`, and process allocations per request
//!    are counted too (wrk is a separate process). Without `wrk` on the PATH (or with
//!    `SMALL_LOAD=inprocess`) an in-process hyper client on a second thread is used instead.
//!
//! Run: `cargo bench --bench small_responses`. Knobs (environment): `SMALL_SECS` (per run, default
//! 4), `SMALL_ROUNDS` (default 5), `SMALL_CONNS` (default 32), `SMALL_LOAD` (`wrk`/`inprocess`).
//! Without `--bench` on the command line (`cargo test --benches`) it runs a short smoke test.
//!
//! `--figures` (used by `scripts/figures.sh`): allocations, time per response against a raw
//! deflate and tower-http, and the loopback ratios (3 rounds of 2 s), as `FIGURE` lines.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    alloc_counts, call, cpu_ns_of, drain, handler, json_document, median, ours, request, thread_id,
    tower_http, tower_http_layer, trace_allocs, write_csv, BACKEND,
};
use flate2::{Compress, Compression, FlushCompress};
use http::{header, Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower::{Layer, Service};
use tower_gzip::GzipLayer;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

const JSON_LEN: usize = 4000;

/// The `random_padding` bound of the padding cases.
const PADDING: u16 = 64;
const STACKS: [&str; 3] = ["no-layer", "ours", "tower-http"];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// 1. Allocations per response, in-process
// ---------------------------------------------------------------------------------------------

/// (allocations, bytes allocated, response bytes) per response, averaged over `n` responses;
/// prints the size of every allocation of one response.
fn count<S, B>(name: &str, mut svc: S, gzip: bool, n: usize) -> (f64, f64, usize)
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let mut size = 0;
    for _ in 0..50 {
        size = drain(call(&mut svc, request(gzip)).into_body()).bytes;
    }
    let req = request(gzip);
    let sizes = trace_allocs(|| {
        drain(call(&mut svc, req).into_body());
    });
    println!("  allocation sizes, {name}, gzip={gzip}: {sizes:?}");
    let requests: Vec<_> = (0..n).map(|_| request(gzip)).collect();
    let (calls0, bytes0) = alloc_counts();
    for req in requests {
        drain(call(&mut svc, req).into_body());
    }
    let (calls1, bytes1) = alloc_counts();
    (
        (calls1 - calls0) as f64 / n as f64,
        (bytes1 - bytes0) as f64 / n as f64,
        size,
    )
}

fn allocation_report(json: &Bytes) {
    let n = 2000;
    let body = |json: &Bytes| {
        let json = json.clone();
        move || Full::new(json.clone())
    };
    let rows_in = [
        (
            "no-layer",
            "gzip",
            count("no-layer", handler("application/json", body(json)), true, n),
        ),
        (
            "ours",
            "gzip",
            count(
                "ours",
                ours(&GzipLayer::new(), handler("application/json", body(json))),
                true,
                n,
            ),
        ),
        (
            "ours never_hibernate",
            "gzip",
            count(
                "ours never_hibernate",
                ours(
                    &GzipLayer::new().never_hibernate(),
                    handler("application/json", body(json)),
                ),
                true,
                n,
            ),
        ),
        (
            "ours",
            "identity",
            count(
                "ours",
                ours(&GzipLayer::new(), handler("application/json", body(json))),
                false,
                n,
            ),
        ),
        (
            "tower-http",
            "gzip",
            count(
                "tower-http",
                tower_http(6, handler("application/json", body(json))),
                true,
                n,
            ),
        ),
        (
            "tower-http",
            "identity",
            count(
                "tower-http",
                tower_http(6, handler("application/json", body(json))),
                false,
                n,
            ),
        ),
    ];
    println!(
        "\nallocations per {}-byte JSON response, in-process, level 6, backend {BACKEND}",
        json.len()
    );
    println!(
        "{:<21} {:<9} {:>12} {:>16} {:>15}",
        "stack", "client", "allocations", "bytes allocated", "response bytes"
    );
    let mut rows = vec![[
        "backend",
        "stack",
        "client",
        "allocs_per_response",
        "bytes_per_response",
        "response_bytes",
    ]
    .map(String::from)
    .to_vec()];
    for (stack, client, (allocs, bytes, size)) in rows_in {
        println!("{stack:<21} {client:<9} {allocs:>12.1} {bytes:>16.0} {size:>15}");
        rows.push(vec![
            BACKEND.to_string(),
            stack.to_string(),
            client.to_string(),
            format!("{allocs:.1}"),
            format!("{bytes:.0}"),
            size.to_string(),
        ]);
    }
    println!();
    write_csv(&format!("small_allocs_{BACKEND}.csv"), &rows);
}

// ---------------------------------------------------------------------------------------------
// 1b. Time per response, in-process (where the time goes)
// ---------------------------------------------------------------------------------------------

/// A raw deflate state with the given window (miniz_oxide has a fixed 32 KiB window).
fn raw_deflate(level: u32, window_bits: u8) -> Compress {
    #[cfg(feature = "zlib-rs")]
    return Compress::new_with_window_bits(Compression::new(level), false, window_bits);
    #[cfg(not(feature = "zlib-rs"))]
    {
        let _ = window_bits;
        Compress::new(Compression::new(level), false)
    }
}

fn gzip_fresh(json: &[u8], level: u32, window_bits: u8) -> usize {
    let mut deflate = raw_deflate(level, window_bits);
    let mut out = [0u8; 8192];
    deflate
        .compress(json, &mut out, FlushCompress::Finish)
        .unwrap();
    deflate.total_out() as usize + 18 + (crc32fast::hash(json) & 1) as usize
}

type Case<'a> = (String, Box<dyn FnMut() + 'a>);

/// Time per response of each case, measured in interleaved rounds (every round runs `batch` calls
/// of each case, in rotating order) so that the machine's background load hits all cases alike.
/// Reports the median per-call time and the median per-round ratio to the first case.
fn timing_report(json: &Bytes, smoke: bool) {
    let (batch, rounds) = if smoke { (5, 3) } else { (200, 31) };
    let sizes = trace_allocs(|| {
        std::hint::black_box(gzip_fresh(json, 6, 15));
    });
    println!("  allocation sizes, raw deflate new state + one call: {sizes:?}");
    let body = |json: &Bytes| {
        let json = json.clone();
        move || Full::new(json.clone())
    };
    let mut cases: Vec<Case<'_>> = Vec::new();
    let mut svc = handler("application/json", body(json));
    cases.push((
        "no-layer".into(),
        Box::new(move || {
            drain(call(&mut svc, request(true)).into_body());
        }),
    ));
    for (level, window_bits, hibernate) in [
        (6, 15, true),
        (6, 15, false),
        (1, 15, true),
        (6, 12, true),
        (6, 9, true),
    ] {
        let mut layer = GzipLayer::new().level(level).window_bits(window_bits);
        if !hibernate {
            layer = layer.never_hibernate();
        }
        let mut svc = ours(&layer, handler("application/json", body(json)));
        cases.push((
            format!(
                "ours L{level} wb{window_bits}{}",
                if hibernate { "" } else { " never_hibernate" }
            ),
            Box::new(move || {
                drain(call(&mut svc, request(true)).into_body());
            }),
        ));
    }
    // The BREACH length-hiding knob: the "ours L6 wb15" case with a padded gzip header.
    let mut svc = ours(
        &GzipLayer::new().random_padding(PADDING),
        handler("application/json", body(json)),
    );
    cases.push((
        format!("ours L6 wb15 random_padding({PADDING})"),
        Box::new(move || {
            drain(call(&mut svc, request(true)).into_body());
        }),
    ));
    for level in [6, 1] {
        let mut svc = tower_http(level, handler("application/json", body(json)));
        cases.push((
            format!("tower-http L{level}"),
            Box::new(move || {
                drain(call(&mut svc, request(true)).into_body());
            }),
        ));
    }
    for (level, window_bits) in [(6, 15), (1, 15), (6, 12), (6, 9)] {
        cases.push((
            format!("raw deflate, new state, L{level} wb{window_bits}"),
            Box::new(move || {
                std::hint::black_box(gzip_fresh(json, level, window_bits));
            }),
        ));
    }
    for level in [6, 1] {
        let mut deflate = Compress::new(Compression::new(level), false);
        let mut out = [0u8; 8192];
        cases.push((
            format!("raw deflate, reused state (reset), L{level}"),
            Box::new(move || {
                deflate.reset();
                deflate
                    .compress(json, &mut out, FlushCompress::Finish)
                    .unwrap();
                std::hint::black_box(crc32fast::hash(json));
            }),
        ));
    }
    cases.push((
        "create+drop a deflate state only, L6".into(),
        Box::new(|| {
            std::hint::black_box(Compress::new(Compression::new(6), false));
        }),
    ));

    let n = cases.len();
    for (_, f) in cases.iter_mut() {
        for _ in 0..batch {
            f();
        }
    }
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let start = Instant::now();
            for _ in 0..batch {
                (cases[i].1)();
            }
            ns[i].push(start.elapsed().as_nanos() as f64 / batch as f64);
        }
    }
    // The reference for the ratio column: a fresh deflate state compressing the body in one call.
    let reference = cases
        .iter()
        .position(|(name, _)| name == "raw deflate, new state, L6 wb15")
        .unwrap();
    println!(
        "time per {}-byte JSON response, in-process, {rounds} interleaved rounds of {batch} calls, backend {BACKEND}",
        json.len()
    );
    println!(
        "  {:<40} {:>10} {:>24}",
        "case", "median us", "/ raw deflate new L6"
    );
    let mut rows = vec![[
        "backend",
        "case",
        "median_ns_per_response",
        "ratio_to_raw_deflate_new_state_l6",
    ]
    .map(String::from)
    .to_vec()];
    for i in 0..n {
        let mut ratios: Vec<f64> = (0..rounds).map(|r| ns[i][r] / ns[reference][r]).collect();
        let ratio = median(&mut ratios);
        let t = median(&mut ns[i].clone());
        println!("  {:<40} {:>10.2} {:>23.3}x", cases[i].0, t / 1000.0, ratio);
        rows.push(vec![
            BACKEND.to_string(),
            cases[i].0.clone(),
            format!("{t:.0}"),
            format!("{ratio:.3}"),
        ]);
    }
    let find = |name: &str| cases.iter().position(|(case, _)| case == name).unwrap();
    let (plain, padded) = (
        find("ours L6 wb15"),
        find(&format!("ours L6 wb15 random_padding({PADDING})")),
    );
    let mut ratios: Vec<f64> = (0..rounds).map(|r| ns[padded][r] / ns[plain][r]).collect();
    println!(
        "  random_padding({PADDING}) / unpadded, time per response, per round: median {:.3}",
        median(&mut ratios)
    );
    println!();
    write_csv(&format!("small_timing_{BACKEND}.csv"), &rows);
}

// ---------------------------------------------------------------------------------------------
// 1c. random_padding: the spread of response lengths
// ---------------------------------------------------------------------------------------------

/// Extra bytes of `n` responses of `json` with `random_padding(PADDING)` over the unpadded
/// response (the 6-byte extra-field header included): (min, median, max, distinct values).
fn padding_spread(json: &Bytes, n: usize) -> (usize, usize, usize, usize) {
    let body = {
        let json = json.clone();
        move || Full::new(json.clone())
    };
    let mut plain = ours(&GzipLayer::new(), handler("application/json", body.clone()));
    let unpadded = drain(call(&mut plain, request(true)).into_body()).bytes;
    let layer = GzipLayer::new().random_padding(PADDING);
    let mut svc = ours(&layer, handler("application/json", body));
    let mut extra: Vec<usize> = (0..n)
        .map(|_| drain(call(&mut svc, request(true)).into_body()).bytes - unpadded)
        .collect();
    extra.sort_unstable();
    let mut distinct = extra.clone();
    distinct.dedup();
    (extra[0], extra[n / 2], extra[n - 1], distinct.len())
}

fn padding_report(json: &Bytes, smoke: bool) {
    let n = if smoke { 500 } else { 10_000 };
    let (min, median, max, distinct) = padding_spread(json, n);
    println!(
        "random_padding({PADDING}), {n} responses of {} bytes: extra bytes min {min}, median \
         {median}, max {max}, {distinct} distinct lengths (6 bytes of field header + 0..={PADDING})\n",
        json.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Requests per second on loopback
// ---------------------------------------------------------------------------------------------

fn json_response(json: &Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(json.clone()))
        .unwrap()
}

async fn accept_loop<S, B>(listener: tokio::net::TcpListener, svc: S)
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let svc = TowerToHyperService::new(svc.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Starts the server thread; returns the three addresses (in `STACKS` order) and its thread id.
fn start_server(json: Bytes) -> (Vec<SocketAddr>, Option<u64>) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut addrs = Vec::new();
            let mut listeners = Vec::new();
            for _ in STACKS {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addrs.push(listener.local_addr().unwrap());
                listeners.push(listener);
            }
            let handler = {
                let json = json.clone();
                tower::service_fn(move |_req: Request<Incoming>| {
                    std::future::ready(Ok::<_, Infallible>(json_response(&json)))
                })
            };
            let mut listeners = listeners.into_iter();
            tokio::spawn(accept_loop(listeners.next().unwrap(), handler.clone()));
            tokio::spawn(accept_loop(
                listeners.next().unwrap(),
                GzipLayer::new().layer(handler.clone()),
            ));
            tokio::spawn(accept_loop(
                listeners.next().unwrap(),
                tower_http_layer(6).layer(handler),
            ));
            tx.send((addrs, thread_id())).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

/// One load run: (requests per second, requests completed).
fn run_wrk(addr: SocketAddr, secs: u64, conns: u64) -> Option<(f64, u64)> {
    let output = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "-H",
            "Accept-Encoding: gzip",
            &format!("http://{addr}/"),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let total = text
        .lines()
        .find(|l| l.contains("requests in"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((rps, total))
}

/// The in-process alternative to wrk: `conns` keep-alive HTTP/1.1 connections from a hyper client
/// on its own thread and current-thread runtime, each sending requests back to back.
fn run_inprocess(addr: SocketAddr, secs: u64, conns: u64) -> Option<(f64, u64)> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = done.clone();
    let stopper = stop.clone();
    let client = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut tasks = Vec::new();
            for _ in 0..conns {
                let done = counter.clone();
                let stop = stopper.clone();
                tasks.push(tokio::spawn(async move {
                    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let _ = tcp.set_nodelay(true);
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
                            .await
                            .unwrap();
                    tokio::spawn(conn);
                    while !stop.load(Ordering::Relaxed) {
                        let req = Request::builder()
                            .uri("/")
                            .header(header::HOST, "localhost")
                            .header(header::ACCEPT_ENCODING, "gzip")
                            .body(Empty::new())
                            .unwrap();
                        let response = sender.send_request(req).await.unwrap();
                        let _ = response.into_body().collect().await.unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
        });
    });
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let total = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    client.join().ok()?;
    Some((total as f64 / elapsed, total))
}

#[derive(Default)]
struct Sample {
    rps: Vec<f64>,
    cpu_us: Vec<f64>,
    allocs: Vec<f64>,
}

/// Per-round ratios of one loopback measurement.
struct Loopback {
    /// ours / no layer, requests per second.
    rps_ours_over_none: Vec<f64>,
    /// ours / tower-http, requests per second.
    rps_ours_over_tower: Vec<f64>,
    /// Server CPU per request, no layer / ours: the server's capacity ratio.
    cpu_none_over_ours: Vec<f64>,
    /// The load generator.
    load: &'static str,
}

fn loopback_report(json: Bytes, secs: u64, rounds: u64) -> Loopback {
    let conns = env_or("SMALL_CONNS", 32);
    let use_wrk = std::env::var("SMALL_LOAD").map_or(true, |v| v != "inprocess")
        && Command::new("wrk").arg("--version").output().is_ok();
    let load = if use_wrk {
        "wrk -t1"
    } else {
        "in-process hyper client"
    };
    let (addrs, tid) = start_server(json);
    let schedstat = tid.map(|tid| format!("/proc/self/task/{tid}/schedstat"));
    println!(
        "loopback HTTP/1.1, {load}, {conns} connections, {secs} s per run, {rounds} rounds, backend {BACKEND}"
    );
    let mut samples: Vec<Sample> = STACKS.iter().map(|_| Sample::default()).collect();
    let mut ratio_ours: Vec<f64> = Vec::new();
    let mut ratio_ours_tower: Vec<f64> = Vec::new();
    let mut ratio_cpu: Vec<f64> = Vec::new();
    for round in 0..rounds {
        let mut this_round = [0.0; 3];
        let mut cpu_round = [f64::NAN; 3];
        for (i, stack) in STACKS.iter().enumerate() {
            let cpu0 = schedstat.as_deref().and_then(cpu_ns_of);
            let (allocs0, _) = alloc_counts();
            let result = if use_wrk {
                run_wrk(addrs[i], secs, conns)
            } else {
                run_inprocess(addrs[i], secs, conns)
            };
            let (allocs1, _) = alloc_counts();
            let cpu1 = schedstat.as_deref().and_then(cpu_ns_of);
            let Some((rps, total)) = result else {
                println!("  load generator failed for {stack}");
                continue;
            };
            let cpu_us = match (cpu0, cpu1) {
                (Some(a), Some(b)) if total > 0 => (b - a) as f64 / 1000.0 / total as f64,
                _ => f64::NAN,
            };
            let allocs = (allocs1 - allocs0) as f64 / total.max(1) as f64;
            println!(
                "  round {round} {stack:<11} {rps:>10.0} req/s  server CPU {cpu_us:>6.2} us/req  {allocs:>6.1} allocs/req{}",
                if use_wrk { "" } else { " (client included)" }
            );
            this_round[i] = rps;
            cpu_round[i] = cpu_us;
            samples[i].rps.push(rps);
            samples[i].cpu_us.push(cpu_us);
            samples[i].allocs.push(allocs);
        }
        if this_round.iter().all(|&r| r > 0.0) {
            ratio_ours.push(this_round[1] / this_round[0]);
            ratio_ours_tower.push(this_round[1] / this_round[2]);
            ratio_cpu.push(cpu_round[0] / cpu_round[1]);
        }
    }
    let mut rows = vec![[
        "backend",
        "load",
        "stack",
        "median_rps",
        "min_rps",
        "max_rps",
        "median_server_cpu_us_per_req",
        "median_allocs_per_req",
    ]
    .map(String::from)
    .to_vec()];
    println!(
        "\n{:<11} {:>12} {:>10} {:>10} {:>14} {:>12}",
        "stack", "median req/s", "min", "max", "CPU us/req", "allocs/req"
    );
    for (stack, s) in STACKS.iter().zip(samples.iter_mut()) {
        let min = s.rps.iter().copied().fold(f64::INFINITY, f64::min);
        let max = s.rps.iter().copied().fold(0.0, f64::max);
        let rps = median(&mut s.rps);
        let cpu = median(&mut s.cpu_us);
        let allocs = median(&mut s.allocs);
        println!("{stack:<11} {rps:>12.0} {min:>10.0} {max:>10.0} {cpu:>14.2} {allocs:>12.1}");
        rows.push(vec![
            BACKEND.to_string(),
            load.to_string(),
            stack.to_string(),
            format!("{rps:.0}"),
            format!("{min:.0}"),
            format!("{max:.0}"),
            format!("{cpu:.2}"),
            format!("{allocs:.1}"),
        ]);
    }
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        (lo, hi)
    };
    let (lo1, hi1) = spread(&ratio_ours);
    let (lo2, hi2) = spread(&ratio_ours_tower);
    println!(
        "ours / no-layer req/s, per round: median {:.3} (min {lo1:.3}, max {hi1:.3})",
        median(&mut ratio_ours.clone())
    );
    println!(
        "ours / tower-http req/s, per round: median {:.3} (min {lo2:.3}, max {hi2:.3})\n",
        median(&mut ratio_ours_tower.clone())
    );
    let result = Loopback {
        rps_ours_over_none: ratio_ours.clone(),
        rps_ours_over_tower: ratio_ours_tower.clone(),
        cpu_none_over_ours: ratio_cpu,
        load,
    };
    rows.push(vec![
        BACKEND.to_string(),
        load.to_string(),
        "ratio ours/no-layer".to_string(),
        format!("{:.3}", median(&mut ratio_ours)),
        format!("{lo1:.3}"),
        format!("{hi1:.3}"),
        String::new(),
        String::new(),
    ]);
    rows.push(vec![
        BACKEND.to_string(),
        load.to_string(),
        "ratio ours/tower-http".to_string(),
        format!("{:.3}", median(&mut ratio_ours_tower)),
        format!("{lo2:.3}"),
        format!("{hi2:.3}"),
        String::new(),
        String::new(),
    ]);
    let tag = if use_wrk { "wrk" } else { "inprocess" };
    write_csv(&format!("small_loopback_{tag}_{BACKEND}.csv"), &rows);
    result
}

/// Figures mode: what `FIGURES.md` quotes about small responses, from one process (one run).
fn figures() {
    let quick = common::quick_mode();
    let json = json_document(JSON_LEN);
    let body = |json: &Bytes| {
        let json = json.clone();
        move || Full::new(json.clone())
    };
    let n = if quick { 200 } else { 2000 };
    let mut gzip_allocs = Vec::new();
    for (key, gzip, allocs) in [
        (
            "none",
            true,
            count(
                "no-layer",
                handler("application/json", body(&json)),
                true,
                n,
            )
            .0,
        ),
        (
            "ours",
            true,
            count(
                "ours",
                ours(&GzipLayer::new(), handler("application/json", body(&json))),
                true,
                n,
            )
            .0,
        ),
        (
            "ours",
            false,
            count(
                "ours",
                ours(&GzipLayer::new(), handler("application/json", body(&json))),
                false,
                n,
            )
            .0,
        ),
        (
            "tower_http",
            true,
            count(
                "tower-http",
                tower_http(6, handler("application/json", body(&json))),
                true,
                n,
            )
            .0,
        ),
    ] {
        let client = if gzip { "gzip" } else { "identity" };
        common::figure(&format!("small.allocs.{key}.{client}"), allocs);
        gzip_allocs.push((key, gzip, allocs));
    }
    let allocs_of = |name: &str| {
        gzip_allocs
            .iter()
            .find(|(key, gzip, _)| *key == name && *gzip)
            .map_or(f64::NAN, |(_, _, allocs)| *allocs)
    };
    common::figure(
        "small.allocs.ours_minus_tower_http",
        allocs_of("ours") - allocs_of("tower_http"),
    );

    // Time per response in process, interleaved rounds; the reference is a raw deflate that
    // creates a state and compresses the body in one call (what any gzip middleware must do).
    let (batch, rounds) = if quick { (10, 3) } else { (100, 11) };
    let mut cases: Vec<Box<dyn FnMut() + '_>> = Vec::new();
    for level in [6, 1] {
        let mut svc = ours(
            &GzipLayer::new().level(level),
            handler("application/json", body(&json)),
        );
        cases.push(Box::new(move || {
            drain(call(&mut svc, request(true)).into_body());
        }));
    }
    let mut svc = tower_http(6, handler("application/json", body(&json)));
    cases.push(Box::new(move || {
        drain(call(&mut svc, request(true)).into_body());
    }));
    cases.push(Box::new(|| {
        std::hint::black_box(gzip_fresh(&json, 6, 15));
    }));
    // Index 4: case 0 with the BREACH length-hiding knob.
    let mut svc = ours(
        &GzipLayer::new().random_padding(PADDING),
        handler("application/json", body(&json)),
    );
    cases.push(Box::new(move || {
        drain(call(&mut svc, request(true)).into_body());
    }));
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for f in cases.iter_mut() {
        for _ in 0..batch {
            f();
        }
    }
    for round in 0..rounds {
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            let cpu = common::thread_cpu_time_ns();
            for _ in 0..batch {
                (cases[i])();
            }
            ns[i].push((common::thread_cpu_time_ns() - cpu) as f64 / batch as f64);
        }
    }
    let ratio = |a: usize, b: usize| {
        median(&mut (0..rounds).map(|r| ns[a][r] / ns[b][r]).collect::<Vec<_>>())
    };
    common::figure("small.ours.L6.us", median(&mut ns[0].clone()) / 1e3);
    common::figure("small.ours.L1.us", median(&mut ns[1].clone()) / 1e3);
    common::figure("small.ours_over_raw_deflate", ratio(0, 3));
    common::figure("small.ours_over_tower_http", ratio(0, 2));
    common::figure("small.padding64.us", median(&mut ns[4].clone()) / 1e3);
    common::figure("small.padding64_over_ours", ratio(4, 0));
    let (min, med, max, distinct) = padding_spread(&json, if quick { 1000 } else { 10_000 });
    common::figure("small.padding64.extra_min", min as f64);
    common::figure("small.padding64.extra_median", med as f64);
    common::figure("small.padding64.extra_max", max as f64);
    common::figure("small.padding64.distinct_lengths", distinct as f64);

    let (secs, loop_rounds) = if quick { (1, 1) } else { (2, 3) };
    drop(cases);
    let mut loopback = loopback_report(json, secs, loop_rounds);
    common::meta("small.loopback.load", loopback.load);
    common::figure(
        "small.loopback.rps_ours_over_none",
        median(&mut loopback.rps_ours_over_none),
    );
    common::figure(
        "small.loopback.cpu_none_over_ours",
        median(&mut loopback.cpu_none_over_ours),
    );
    common::figure(
        "small.loopback.rps_ours_over_tower_http",
        median(&mut loopback.rps_ours_over_tower),
    );
}

fn main() {
    if common::figures_mode() {
        figures();
        return;
    }
    let smoke = !std::env::args().any(|a| a == "--bench");
    let json = json_document(JSON_LEN);
    allocation_report(&json);
    timing_report(&json, smoke);
    padding_report(&json, smoke);
    let secs = if smoke { 1 } else { env_or("SMALL_SECS", 4) };
    let rounds = if smoke { 1 } else { env_or("SMALL_ROUNDS", 5) };
    loopback_report(json, secs, rounds);
}
