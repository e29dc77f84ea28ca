//! Poll-level tests of the body adapter, driven by a scripted inner body and a no-op waker.

mod support;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::Body;
use http_body_util::{BodyExt, Full, StreamBody};
use support::*;
use tower_gzip::{FlushPolicy, GzipLayer};

/// Polls until the body ends; returns the data frames and the trailers, failing on an error.
fn drain(
    body: &mut (impl Body<Data = Bytes, Error = tower_gzip::BoxError> + Unpin),
) -> (Vec<Bytes>, Option<HeaderMap>) {
    let mut frames = Vec::new();
    let mut trailers = None;
    loop {
        match poll_once(body) {
            Polled::Data(data) => {
                assert!(trailers.is_none(), "data after trailers");
                frames.push(data);
            }
            Polled::Trailers(t) => trailers = Some(t),
            Polled::End => return (frames, trailers),
            Polled::Error(e) => panic!("unexpected error: {e}"),
            Polled::Pending => {}
        }
    }
}

#[test]
fn on_stall_flushes_everything_produced_before_the_stall() {
    let script = Script::new([
        data("first line\n"),
        data("second line\n"),
        Step::Pending,
        data("third line\n"),
        Step::Pending,
        Step::End,
    ]);
    let mut body = wrap(&GzipLayer::new(), "application/x-ndjson", script);
    let mut decoder = StreamingDecoder::default();

    let Polled::Data(frame) = poll_once(&mut body) else {
        panic!("expected a frame at the stall")
    };
    assert_eq!(decoder.push(&frame), b"first line\nsecond line\n");

    let Polled::Data(frame) = poll_once(&mut body) else {
        panic!("expected a frame at the stall")
    };
    assert_eq!(
        decoder.push(&frame),
        b"first line\nsecond line\nthird line\n"
    );

    let Polled::Data(last) = poll_once(&mut body) else {
        panic!("expected the gzip trailer")
    };
    assert_eq!(
        decoder.push(&last),
        b"first line\nsecond line\nthird line\n"
    );
    assert!(matches!(poll_once(&mut body), Polled::End));
}

#[test]
fn idle_polls_emit_nothing() {
    let script = Script::new([
        Step::Pending,
        Step::Pending,
        data("hello"),
        Step::Pending,
        Step::Pending,
        Step::Pending,
        Step::End,
    ]);
    let mut body = wrap(&GzipLayer::new(), "text/plain", script);
    assert!(
        matches!(poll_once(&mut body), Polled::Pending),
        "no header before data"
    );
    assert!(matches!(poll_once(&mut body), Polled::Pending));
    let Polled::Data(frame) = poll_once(&mut body) else {
        panic!("data flushed at the stall")
    };
    assert_eq!(StreamingDecoder::default().push(&frame), b"hello");
    // Nothing new was written: no second sync block, no empty frame.
    assert!(matches!(poll_once(&mut body), Polled::Pending));
    assert!(matches!(poll_once(&mut body), Polled::Pending));
    let Polled::Data(last) = poll_once(&mut body) else {
        panic!("gzip trailer")
    };
    assert_eq!(
        last.len(),
        2 + 8,
        "final empty block and the trailer, no extra sync block"
    );
    assert!(matches!(poll_once(&mut body), Polled::End));
}

#[test]
fn every_frame_policy_flushes_each_frame_even_when_ready_back_to_back() {
    let lines: Vec<String> = (0..20).map(|i| format!("{{\"token\":{i}}}\n")).collect();
    let script = Script::new(lines.iter().map(|l| data(l.clone())).chain([Step::End]));
    let layer = GzipLayer::new().flush_policy(FlushPolicy::EveryFrame);
    let mut body = wrap(&layer, "application/x-ndjson", script);
    let mut decoder = StreamingDecoder::default();
    let mut expected = String::new();
    for line in &lines {
        let Polled::Data(frame) = poll_once(&mut body) else {
            panic!("one frame per data frame")
        };
        expected.push_str(line);
        assert_eq!(decoder.push(&frame), expected.as_bytes());
    }
    let (rest, _) = drain(&mut body);
    assert_eq!(rest.len(), 1, "only the gzip trailer is left");
}

#[test]
fn ready_tiny_chunks_are_coalesced_like_one_chunk() {
    let input = json_of_size(1 << 20);

    let one_chunk = Script::new([data(input.clone()), Step::End]);
    let (frames, _) = drain(&mut wrap(&GzipLayer::new(), "application/json", one_chunk));
    let one_chunk: Vec<u8> = frames.concat();

    let tiny = Script::new(
        input
            .chunks(7)
            .map(|c| data(Bytes::copy_from_slice(c)))
            .chain([Step::End]),
    );
    let (frames, _) = drain(&mut wrap(&GzipLayer::new(), "application/json", tiny));
    let tiny: Vec<u8> = frames.concat();

    assert_eq!(gunzip(&one_chunk), input);
    assert_eq!(gunzip(&tiny), input);
    let ratio = tiny.len() as f64 / one_chunk.len() as f64;
    eprintln!(
        "1 MiB as 7-byte ready chunks: {} bytes; as one chunk: {} bytes (x{ratio:.4})",
        tiny.len(),
        one_chunk.len()
    );
    assert!(
        ratio <= 1.05,
        "7-byte chunks: {} bytes vs one chunk: {} bytes (x{ratio:.3})",
        tiny.len(),
        one_chunk.len()
    );
}

#[test]
fn never_polls_the_inner_body_after_it_ended() {
    for layer in [
        GzipLayer::new(),
        GzipLayer::new().flush_policy(FlushPolicy::EveryFrame),
    ] {
        let script = Script::new([data("a".repeat(1000)), Step::End]);
        let polls = script.polls.clone();
        let mut body = wrap(&layer, "text/plain", script);
        let (frames, _) = drain(&mut body);
        assert_eq!(gunzip(&frames.concat()), "a".repeat(1000).as_bytes());
        let after_end = polls.load(Ordering::SeqCst);
        for _ in 0..5 {
            assert!(matches!(poll_once(&mut body), Polled::End));
        }
        assert_eq!(polls.load(Ordering::SeqCst), after_end);
        assert!(body.is_end_stream());
    }
}

#[test]
fn passthrough_never_polls_the_inner_body_after_it_ended() {
    let script = Script::new([data("data: hi\n\n"), Step::End]);
    let polls = script.polls.clone();
    // A skipped media type is passed through, and still fused.
    let mut body = pass_through(script);
    assert!(matches!(poll_once(&mut body), Polled::Data(d) if d == "data: hi\n\n"));
    assert!(matches!(poll_once(&mut body), Polled::End));
    let after_end = polls.load(Ordering::SeqCst);
    assert!(matches!(poll_once(&mut body), Polled::End));
    assert!(matches!(poll_once(&mut body), Polled::End));
    assert_eq!(polls.load(Ordering::SeqCst), after_end);
    assert!(
        !body.is_compressing(),
        "still a pass-through body after its end"
    );
}

/// Wraps `script` as a `text/event-stream` response, which the default layer does not compress.
fn pass_through(script: Script) -> tower_gzip::GzipBody<Script> {
    use tower::{service_fn, Layer, ServiceExt};
    let mut script = Some(script);
    let svc = GzipLayer::new().layer(service_fn(move |_req: http::Request<()>| {
        let response = http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(script.take().unwrap())
            .unwrap();
        std::future::ready(Ok::<_, std::convert::Infallible>(response))
    }));
    let request = http::Request::builder()
        .header("accept-encoding", "gzip")
        .body(())
        .unwrap();
    let response = futures_util::FutureExt::now_or_never(svc.oneshot(request))
        .unwrap()
        .unwrap();
    assert!(!response.headers().contains_key("content-encoding"));
    let body = response.into_body();
    assert!(!body.is_compressing());
    body
}

#[test]
fn inner_error_mid_body_passes_through_and_no_gzip_trailer_is_written() {
    let script = Script::new([
        data("partial line one\n"),
        Step::Pending,
        data("partial line two\n"),
        Step::Error("upstream reset"),
    ]);
    let polls = script.polls.clone();
    let mut body = wrap(&GzipLayer::new(), "application/x-ndjson", script);
    let mut received = Vec::new();
    let error = loop {
        match poll_once(&mut body) {
            Polled::Data(d) => received.extend_from_slice(&d),
            Polled::Pending => {}
            Polled::Error(e) => break e,
            other => panic!("expected the error, got {other:?}"),
        }
    };
    // The very same error value, downcastable by the caller.
    assert_eq!(
        error.downcast_ref::<ScriptError>(),
        Some(&ScriptError("upstream reset"))
    );
    // Everything the handler produced before the error decodes (the bytes compressed but not yet
    // handed out when the error came are flushed and yielded before it), but the stream is not a
    // complete gzip member.
    assert_eq!(
        StreamingDecoder::default().push(&received),
        b"partial line one\npartial line two\n"
    );
    let mut out = Vec::new();
    let complete =
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&received[..]), &mut out);
    assert!(complete.is_err(), "a failed body must not look complete");
    // Ended, and the failed inner body is never polled again.
    let after_error = polls.load(Ordering::SeqCst);
    assert!(matches!(poll_once(&mut body), Polled::End));
    assert_eq!(polls.load(Ordering::SeqCst), after_error);
}

/// Review finding: frames compressed in the same poll as the inner error were dropped with the
/// deflate state, so the client lost the last thing the handler said before failing.
#[test]
fn bytes_compressed_before_an_inner_error_are_yielded_flushed_before_it() {
    let script = Script::new([
        data("line one\n"),
        data("line two\n"),
        data("line three\n"),
        Step::Error("upstream reset"),
    ]);
    let polls = script.polls.clone();
    let mut body = wrap(&GzipLayer::new(), "application/x-ndjson", script);
    // Everything is ready at once: one poll compresses the three lines and meets the error.
    let Polled::Data(frame) = poll_once(&mut body) else {
        panic!("expected the compressed lines before the error");
    };
    assert_eq!(
        StreamingDecoder::default().push(&frame),
        b"line one\nline two\nline three\n"
    );
    let polls_at_error = polls.load(Ordering::SeqCst);
    match poll_once(&mut body) {
        Polled::Error(e) => assert_eq!(
            e.downcast_ref::<ScriptError>(),
            Some(&ScriptError("upstream reset"))
        ),
        other => panic!("expected the inner error, got {other:?}"),
    }
    assert!(matches!(poll_once(&mut body), Polled::End));
    assert!(matches!(poll_once(&mut body), Polled::End));
    // The failed inner body is not polled again while the error is handed out, nor after.
    assert_eq!(polls.load(Ordering::SeqCst), polls_at_error);
    let mut out = Vec::new();
    let complete =
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&frame[..]), &mut out);
    assert!(complete.is_err(), "a failed body must not look complete");
}

/// An inner body that is always ready with an empty data frame, and counts its polls.
struct EndlessEmptyFrames(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Body for EndlessEmptyFrames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::new()))))
    }
}

/// Review finding: only input bytes were budgeted per poll, so a body that kept returning ready
/// empty frames made one `poll_frame` loop forever and held the executor thread.
#[test]
fn a_body_always_ready_with_empty_frames_cannot_hold_the_executor() {
    struct CountingWaker(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let inner_polls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut body = wrap(
        &GzipLayer::new(),
        "text/plain",
        EndlessEmptyFrames(inner_polls.clone()),
    );
    let wakes = std::sync::Arc::new(CountingWaker(Default::default()));
    let waker = std::task::Waker::from(wakes.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    for round in 1..=3 {
        let before = inner_polls.load(Ordering::SeqCst);
        let polled = std::pin::Pin::new(&mut body).poll_frame(&mut cx);
        assert!(polled.is_pending(), "round {round}: nothing to yield yet");
        let used = inner_polls.load(Ordering::SeqCst) - before;
        assert!(
            (1..=1024).contains(&used),
            "round {round}: one poll_frame polled the inner body {used} times"
        );
        // It gave the thread back but asked to be polled again: the body is not stuck.
        assert_eq!(wakes.0.load(Ordering::SeqCst), round);
    }
}

#[test]
fn error_before_any_data_yields_only_the_error() {
    let script = Script::new([Step::Error("boom")]);
    let mut body = wrap(&GzipLayer::new(), "text/plain", script);
    assert!(matches!(poll_once(&mut body), Polled::Error(e) if e.to_string() == "boom"));
    assert!(matches!(poll_once(&mut body), Polled::End));
}

fn trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static("0"));
    t.insert("x-checksum", HeaderValue::from_static("abc"));
    t
}

#[test]
fn trailers_arrive_after_the_complete_gzip_member() {
    let script = Script::new([
        data("one "),
        Step::Pending,
        data("two"),
        Step::Trailers(trailers()),
    ]);
    let polls = script.polls.clone();
    let mut body = wrap(&GzipLayer::new(), "text/plain", script);
    let (frames, got) = drain(&mut body);
    assert_eq!(gunzip(&frames.concat()), b"one two");
    assert_eq!(got, Some(trailers()));
    // Trailers are the inner body's last frame: it is not polled after them.
    assert_eq!(polls.load(Ordering::SeqCst), 4);
}

#[test]
fn trailers_survive_empty_body() {
    let script = Script::new([Step::Trailers(trailers())]);
    let (frames, got) = drain(&mut wrap(&GzipLayer::new(), "text/plain", script));
    assert_eq!(gunzip(&frames.concat()), b"");
    assert_eq!(got, Some(trailers()));
}

#[test]
fn empty_streamed_body_is_a_valid_empty_gzip_member() {
    for layer in [
        GzipLayer::new(),
        GzipLayer::new().flush_policy(FlushPolicy::EveryFrame),
    ] {
        let script = Script::new([Step::Pending, Step::End]);
        let (frames, trailers) = drain(&mut wrap(&layer, "text/plain", script));
        assert_eq!(frames.len(), 1);
        assert_eq!(gunzip(&frames[0]), b"");
        assert!(trailers.is_none());
    }
}

#[test]
fn zero_length_data_frames_are_not_the_end_and_never_produce_empty_frames() {
    for layer in [
        GzipLayer::new(),
        GzipLayer::new().flush_policy(FlushPolicy::EveryFrame),
    ] {
        let script = Script::new([
            data(""),
            Step::Pending,
            data(""),
            data("abc"),
            data(""),
            Step::Pending,
            data(""),
            Step::Pending,
            data("def"),
            data(""),
            Step::End,
        ]);
        let mut body = wrap(&layer, "text/plain", script);
        assert!(
            matches!(poll_once(&mut body), Polled::Pending),
            "empty frames emit nothing"
        );
        let (frames, _) = drain(&mut body);
        assert!(
            frames.iter().all(|f| !f.is_empty()),
            "no empty frame: {frames:?}"
        );
        assert_eq!(gunzip(&frames.concat()), b"abcdef");
    }
}

#[test]
fn a_huge_ready_chunk_becomes_bounded_frames() {
    // 16 MB: output frames stay small and each poll does a bounded amount of work.
    let input = Bytes::from(json_of_size(16 << 20));
    let script = Script::new([Step::Data(input.clone()), Step::End]);
    let mut body = wrap(&GzipLayer::new(), "application/json", script);
    let mut frames = Vec::new();
    let mut polls = 0;
    loop {
        polls += 1;
        match poll_once(&mut body) {
            Polled::Data(d) => frames.push(d),
            Polled::Pending => {} // yielded to the executor; the waker was woken
            Polled::End => break,
            other => panic!("{other:?}"),
        }
    }
    let largest = frames.iter().map(Bytes::len).max().unwrap();
    assert!(largest <= 128 * 1024, "largest frame {largest} bytes");
    // At most 16 KiB of input is compressed per poll.
    assert!(
        polls >= input.len() / (16 * 1024),
        "work is spread over {polls} polls"
    );
    assert_eq!(gunzip(&frames.concat()), input);
}

#[test]
fn a_huge_incompressible_chunk_becomes_bounded_frames() {
    let mut x: u32 = 1;
    let input: Vec<u8> = (0..4_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let script = Script::new([data(input.clone()), Step::End]);
    let (frames, _) = drain(&mut wrap(
        &GzipLayer::new(),
        "application/octet-stream",
        script,
    ));
    let largest = frames.iter().map(Bytes::len).max().unwrap();
    assert!(largest <= 128 * 1024, "largest frame {largest} bytes");
    assert_eq!(gunzip(&frames.concat()), input);
}

#[test]
fn size_hint_and_end_of_stream_are_truthful() {
    let script = Script::new([data("x".repeat(500)), Step::End]);
    let mut body = wrap(&GzipLayer::new(), "text/plain", script);
    assert!(!body.is_end_stream());
    assert_eq!(body.size_hint().exact(), None, "compressed size is unknown");
    let (frames, _) = drain(&mut body);
    assert!(!frames.is_empty());
    assert!(
        body.is_compressing(),
        "still a compressing body after its end"
    );
    assert!(body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(0));

    // Not compressed: the inner body's own answers.
    let text = Bytes::from("x".repeat(500));
    let body = pass_through_full(text.clone());
    assert_eq!(body.size_hint().exact(), Some(500));
    assert!(!body.is_end_stream());
}

fn pass_through_full(text: Bytes) -> tower_gzip::GzipBody<Full<Bytes>> {
    use tower::{service_fn, ServiceExt};
    let svc = tower_gzip::Gzip::new(service_fn(move |_req: http::Request<()>| {
        std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(
            Full::new(text.clone()),
        )))
    }));
    // No Accept-Encoding: served as identity.
    let response = futures_util::FutureExt::now_or_never(svc.oneshot(http::Request::new(())))
        .unwrap()
        .unwrap();
    response.into_body()
}

#[tokio::test]
async fn streamed_body_through_a_channel_round_trips_with_each_level() {
    for level in [0, 1, 6, 9] {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let body = wrap(&GzipLayer::new().level(level), "application/json", body);
        let input = json_lines(3000);
        let chunks: Vec<Bytes> = input.chunks(1000).map(Bytes::copy_from_slice).collect();
        let producer = tokio::spawn(async move {
            for chunk in chunks {
                tx.send(Ok(http_body::Frame::data(chunk))).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let collected = body.collect().await.unwrap().to_bytes();
        producer.await.unwrap();
        assert_eq!(gunzip(&collected), input, "level {level}");
    }
}

/// The staging fast path for tiny frames (a frame that fits the staging buffer is only copied):
/// each stall still flushes everything that came before it, so each line decodes on arrival, and
/// the metrics and the per-response stats count every byte.
#[test]
fn tiny_frames_between_stalls_are_flushed_at_each_stall_and_counted() {
    let metrics = tower_gzip::GzipMetrics::new();
    let ended = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = ended.clone();
    let layer = GzipLayer::new()
        .metrics(metrics.clone())
        .on_response_end(move |stats| log.lock().unwrap().push(stats.clone()));
    let lines: Vec<String> = (0..60)
        .map(|i| format!("{{\"n\":{i},\"text\":\"token {}\"}}\n", i * 7 % 13))
        .collect();
    let mut steps = Vec::new();
    for line in &lines {
        for piece in line.as_bytes().chunks(7) {
            steps.push(data(Bytes::copy_from_slice(piece)));
        }
        steps.push(Step::Pending);
    }
    steps.push(Step::End);
    let mut body = wrap(&layer, "application/x-ndjson", Script::new(steps));
    let mut decoder = StreamingDecoder::default();
    let mut decoded = Vec::new();
    let mut expected = Vec::new();
    for line in &lines {
        expected.extend_from_slice(line.as_bytes());
        // The line's frames are staged; the stall after them flushes and hands out one frame.
        match poll_once(&mut body) {
            Polled::Data(d) => decoded = decoder.push(&d).to_vec(),
            other => panic!("expected the frame flushed at the stall, got {other:?}"),
        }
        assert_eq!(decoded, expected, "decodable at the stall after {line:?}");
    }
    let (rest, _) = drain(&mut body);
    for frame in rest {
        decoded = decoder.push(&frame).to_vec();
    }
    assert_eq!(decoded, expected);
    let total = expected.len() as u64;
    assert_eq!(metrics.input_bytes(), total);
    let ended = ended.lock().unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].bytes_in, total);
    assert!(ended[0].completed);
}

/// Review finding: a frame's data need not be one slice (a `Buf` such as `Chain` hands its bytes
/// out in several chunks), and the tiny-frame staging path compressed only the first chunk of a
/// frame, silently dropping the rest. Every byte must be compressed, with frames large and small.
#[test]
fn data_in_several_chunks_is_compressed_whole() {
    use bytes::buf::{Buf, Chain};
    let input = json_of_size(64 * 1024);
    for piece in [3, 7, 40, 3000, 20_000] {
        let frames: Vec<Result<http_body::Frame<Chain<Bytes, Bytes>>, std::convert::Infallible>> =
            input
                .chunks(piece)
                .map(|c| {
                    let (a, b) = c.split_at(c.len() / 2);
                    Ok(http_body::Frame::data(
                        Bytes::copy_from_slice(a).chain(Bytes::copy_from_slice(b)),
                    ))
                })
                .collect();
        let inner = StreamBody::new(futures_util::stream::iter(frames));
        let mut body = wrap(&GzipLayer::new(), "application/json", inner);
        let (frames, _) = drain(&mut body);
        let decoded = gunzip(&frames.concat());
        assert!(
            decoded == input,
            "pieces of {piece} bytes: {} bytes decoded of {}",
            decoded.len(),
            input.len()
        );
    }
}
