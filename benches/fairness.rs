//! Issue 4, benchmark 5 (executor fairness): the longest single `poll_frame` call while a body
//! compresses one ready 16 MB chunk of JSON, against what one-shot compression of the same 16 MB
//! would block a thread for.
//!
//! Every `poll_frame` is timed with `Instant` (wall time). On a shared machine a poll can be
//! preempted by another process, which only makes it look longer: the worst poll of a run is an
//! upper bound. Each configuration runs `FAIRNESS_REPS` times (default 5). The polls are the
//! same in every run (same input, same slices), so the headline figure takes, for each poll, the
//! fastest of the runs and reports the longest of those: a preemption rarely hits the same poll in
//! every run. The raw worst poll of the worst and of the median run are reported too.
//!
//! Run: `cargo bench --bench fairness`. Without `--bench` on the command line
//! (`cargo test --benches`) it runs once on 1 MB.
//!
//! `--figures` (used by `scripts/figures.sh`): one pass of each stack as a user would run it
//! (`GzipLayer::new()`, tower-http at its default gzip level 6, flate2 one call), reporting each
//! pass's raw worst poll (wall time, preemption included) and, beside it, its 99th percentile and
//! the worst poll's on-CPU time (`CLOCK_THREAD_CPUTIME_ID`: the work the poll did, without the
//! time the thread was preempted); the script takes the median of each over several runs.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use common::{
    call, figure, figures_mode, flate2_gzip, gunzip, handler, json_document, median, noop_waker,
    ours, quick_mode, request, tower_http, write_csv, Chunked, BACKEND,
};
use http_body::Body;
use tower_gzip::GzipLayer;

const SIZE: usize = 16_000_000;

#[derive(Default)]
struct Polls {
    wall_us: Vec<f64>,
    /// On-CPU time of each poll: the wall time minus any time the thread was preempted.
    cpu_us: Vec<f64>,
    bytes: usize,
    output: Vec<u8>,
}

/// CPU time the calling thread has used, in µs.
fn thread_cpu_us() -> f64 {
    common::thread_cpu_time_ns() as f64 / 1e3
}

/// Polls `body` to the end, timing every `poll_frame`.
fn timed<B>(body: B, keep_output: bool) -> Polls
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut body = std::pin::pin!(body);
    let mut polls = Polls::default();
    loop {
        let cpu = thread_cpu_us();
        let start = Instant::now();
        let result = Pin::as_mut(&mut body).poll_frame(&mut cx);
        let wall = start.elapsed();
        polls.cpu_us.push(thread_cpu_us() - cpu);
        polls.wall_us.push(wall.as_secs_f64() * 1e6);
        match result {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let chunk = bytes::Buf::chunk(data);
                    polls.bytes += chunk.len();
                    if keep_output {
                        polls.output.extend_from_slice(chunk);
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => panic!("body error: {e:?}"),
            Poll::Ready(None) => return polls,
            Poll::Pending => {}
        }
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

/// Figures mode: one pass per stack, each body polled to its end as a server would, every poll
/// timed; the figure is the longest poll of the pass (no minimum over runs: what a user sees).
fn figures() {
    let size = if quick_mode() { 4_000_000 } else { SIZE };
    let json = json_document(size).slice(..size);
    let data = json.clone();
    let make = move || Chunked::new(data.clone(), usize::MAX);

    let mut svc = ours(&GzipLayer::new(), handler("application/json", make.clone()));
    let polls = timed(call(&mut svc, request(true)).into_body(), true);
    assert_eq!(gunzip(&polls.output), json[..], "round trip");
    let ours_max = max(&polls.wall_us) / 1e3;
    figure("fairness.ours.max_poll_ms", ours_max);
    figure(
        "fairness.ours.p99_poll_ms",
        percentile(&polls.wall_us, 0.99) / 1e3,
    );
    figure("fairness.ours.max_poll_cpu_ms", max(&polls.cpu_us) / 1e3);
    figure(
        "fairness.ours.median_poll_ms",
        percentile(&polls.wall_us, 0.5) / 1e3,
    );
    figure("fairness.ours.polls", polls.wall_us.len() as f64);
    figure(
        "fairness.ours.total_ms",
        polls.wall_us.iter().sum::<f64>() / 1e3,
    );

    let mut svc = tower_http(6, handler("application/json", make));
    let polls = timed(call(&mut svc, request(true)).into_body(), false);
    figure("fairness.tower_http.max_poll_ms", max(&polls.wall_us) / 1e3);

    let start = Instant::now();
    std::hint::black_box(flate2_gzip(&json, 6));
    let oneshot_ms = start.elapsed().as_secs_f64() * 1e3;
    figure("fairness.oneshot_ms", oneshot_ms);
    figure("fairness.ours.max_poll_over_oneshot", ours_max / oneshot_ms);
}

fn main() {
    if figures_mode() {
        figures();
        return;
    }
    let smoke = !std::env::args().any(|a| a == "--bench");
    let size = if smoke { 1_000_000 } else { SIZE };
    let reps: usize = if smoke {
        1
    } else {
        std::env::var("FAIRNESS_REPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5)
    };
    let json = json_document(size).slice(..size);
    println!(
        "\nlongest poll_frame while compressing one ready {size}-byte JSON chunk, {reps} runs each, backend {BACKEND}"
    );
    println!(
        "{:<16} {:>6} {:>14} {:>15} {:>12} {:>12} {:>12} {:>14}",
        "stack",
        "polls",
        "longest poll",
        "max poll ms",
        "p99 wall ms",
        "median ms",
        "total ms",
        "one-shot ms"
    );
    let mut rows = vec![[
        "backend",
        "stack",
        "level",
        "polls",
        "longest_poll_ms_min_over_runs",
        "max_wall_ms_worst_run",
        "max_wall_ms_median_run",
        "p99_wall_ms",
        "median_poll_ms",
        "total_ms",
        "oneshot_ms",
    ]
    .map(String::from)
    .to_vec()];
    let stacks: [(&str, u32); 4] = [("ours", 1), ("ours", 6), ("ours", 9), ("tower-http", 6)];
    for (stack, level) in stacks {
        let mut oneshot_ms = Vec::new();
        for _ in 0..reps.max(1) {
            let start = Instant::now();
            let out = flate2_gzip(&json, level);
            oneshot_ms.push(start.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(out);
        }
        let (mut max_wall, mut p99, mut med, mut total) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut poll_count = 0;
        // Per poll index, the shortest time seen over the runs: the polls are the same in every
        // run (same input, same slices), and a preemption rarely hits the same poll twice.
        let mut per_index_min: Vec<f64> = Vec::new();
        for rep in 0..reps {
            let data = json.clone();
            let make = move || Chunked::new(data.clone(), usize::MAX);
            let polls = if stack == "ours" {
                let mut svc = ours(
                    &GzipLayer::new().level(level),
                    handler("application/json", make),
                );
                timed(call(&mut svc, request(true)).into_body(), rep == 0)
            } else {
                let mut svc = tower_http(level as i32, handler("application/json", make));
                timed(call(&mut svc, request(true)).into_body(), rep == 0)
            };
            if rep == 0 {
                assert_eq!(gunzip(&polls.output), json[..], "round trip");
            }
            poll_count = polls.wall_us.len();
            if rep == 0 {
                per_index_min = polls.wall_us.clone();
            } else if per_index_min.len() == polls.wall_us.len() {
                for (m, w) in per_index_min.iter_mut().zip(&polls.wall_us) {
                    *m = m.min(*w);
                }
            }
            max_wall.push(max(&polls.wall_us) / 1e3);
            p99.push(percentile(&polls.wall_us, 0.99) / 1e3);
            med.push(percentile(&polls.wall_us, 0.5) / 1e3);
            total.push(polls.wall_us.iter().sum::<f64>() / 1e3);
        }
        let worst = max(&max_wall);
        let robust = max(&per_index_min) / 1e3;
        let label = format!("{stack} L{level}");
        let (mw, p, m, t, o) = (
            median(&mut max_wall),
            median(&mut p99),
            median(&mut med),
            median(&mut total),
            median(&mut oneshot_ms),
        );
        println!(
            "{label:<16} {poll_count:>6} {robust:>14.2} {worst:>7.2} ({mw:>5.2}) {p:>12.3} {m:>12.3} {t:>12.1} {o:>14.1}"
        );
        rows.push(vec![
            BACKEND.to_string(),
            stack.to_string(),
            level.to_string(),
            poll_count.to_string(),
            format!("{robust:.3}"),
            format!("{worst:.3}"),
            format!("{mw:.3}"),
            format!("{p:.3}"),
            format!("{m:.3}"),
            format!("{t:.1}"),
            format!("{o:.1}"),
        ]);
    }
    println!("(longest poll: max over poll index of the fastest of the runs, in ms; max poll: raw worst run, median run in parentheses, both inflated by preemption on a shared machine; p99/median/total: median run)\n");
    write_csv(&format!("fairness_{BACKEND}.csv"), &rows);
}
