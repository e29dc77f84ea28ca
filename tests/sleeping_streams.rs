//! Streams that sleep (drop their deflate state), seen on the wire by a client that decodes nothing
//! but what arrives.
//!
//! - The crowd rule: in a layer whose streams already hold more than 64 deflate states, a new
//!   stream gives its state up at its first stall after its first event, wakes for the next one,
//!   and its client gets every event in lockstep.
//! - A burst, then silence: the stream falls asleep on its own (the idle timer) and sends nothing
//!   when it does. The alignment its next deflate state needs goes out in the same frame as its
//!   next event, or as part of its last frame if it ends asleep.
//!
//! A plain hyper server (hyper-util's auto builder over `ServiceBuilder::layer(GzipLayer)`) serves
//! one SSE stream per request, each fed from a channel the test holds. The crowd is 64 streams over
//! HTTP/1.1 that each received one event and stalled. The stream under test then runs in
//! lockstep over HTTP/1.1 or HTTP/2: the test sends event `k`, reads frames into an incremental
//! flate2 decoder until everything sent so far has decoded, and only then sends event `k + 1`.
//! The layer's metrics say whether the stream slept; the same exchange without a crowd is the
//! control (the stream keeps its state). Timeouts only detect failure.

mod wire_support;

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, HOST};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tower::{service_fn, ServiceBuilder};
use tower_gzip::{GzipLayer, GzipMetrics};
use wire_support::{serve_hyper, HANG};

/// The streams the crowd holds: one more and the layer is crowded.
const CROWD: usize = 64;

#[derive(Clone, Copy, Debug)]
enum Proto {
    Http1,
    Http2,
}

/// Senders of the streams the server has opened, in the order their requests arrived.
type Feeds = Arc<Mutex<Vec<Option<mpsc::Sender<Bytes>>>>>;

/// Token-sized SSE events, as an LLM answer sends them.
fn events() -> Vec<Bytes> {
    (0..20)
        .map(|i| {
            Bytes::from(format!(
                "id: {i}\ndata: {{\"choices\":[{{\"delta\":{{\"content\":\" token{i}\"}}}}]}}\n\n"
            ))
        })
        .collect()
}

/// A server whose every request is an SSE stream fed by a new channel, compressed by `layer`.
async fn server(layer: GzipLayer) -> (wire_support::Running, Feeds) {
    let feeds: Feeds = Arc::default();
    let opened = feeds.clone();
    let handler = service_fn(move |_request: Request<Incoming>| {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        opened.lock().unwrap().push(Some(tx));
        async move {
            let body = StreamBody::new(
                ReceiverStream::new(rx).map(|e| Ok::<_, Infallible>(Frame::data(e))),
            );
            Ok::<_, Infallible>(
                Response::builder()
                    .header(CONTENT_TYPE, "text/event-stream")
                    .body(body)
                    .unwrap(),
            )
        }
    });
    let svc = ServiceBuilder::new().layer(layer).service(handler);
    (serve_hyper(svc).await, feeds)
}

/// Opens a stream with a client that decodes nothing. The second value holds the connection's
/// request sender: keep it while the stream is read.
async fn open(
    addr: std::net::SocketAddr,
    proto: Proto,
) -> (Incoming, Box<dyn std::any::Any + Send>) {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let request = || {
        Request::get(format!("http://{addr}/events"))
            .header(HOST, addr.to_string())
            .header(ACCEPT_ENCODING, "gzip")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let response = match proto {
        Proto::Http1 => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            let response = sender.send_request(request()).await.unwrap();
            (response, Box::new(sender) as Box<dyn std::any::Any + Send>)
        }
        Proto::Http2 => {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let response = sender.send_request(request()).await.unwrap();
            (response, Box::new(sender) as Box<dyn std::any::Any + Send>)
        }
    };
    assert_eq!(response.0.headers()[CONTENT_ENCODING], "gzip");
    (response.0.into_body(), response.1)
}

/// Takes the sender of the stream the server opened as its `n`th (from 0): dropping it ends the
/// stream.
async fn feed(feeds: &Feeds, n: usize) -> mpsc::Sender<Bytes> {
    timeout(HANG, async {
        loop {
            if let Some(tx) = feeds.lock().unwrap().get_mut(n).and_then(Option::take) {
                return tx;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the server opened the stream")
}

/// Reads data frames into `decoder` until everything in `sent` has decoded; returns how many
/// frames that took.
async fn read_until_decoded(
    body: &mut Incoming,
    decoder: &mut flate2::write::GzDecoder<Vec<u8>>,
    sent: &[u8],
    what: &str,
) -> usize {
    let mut frames = 0;
    while decoder.get_ref().len() < sent.len() {
        let frame = timeout(HANG, body.frame())
            .await
            .unwrap_or_else(|_| panic!("{what}: never became decodable"))
            .expect("the body ends only when the test ends it")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            frames += 1;
            decoder.write_all(&data).unwrap();
            decoder.flush().unwrap();
        }
        let decoded = decoder.get_ref();
        assert_eq!(decoded[..], sent[..decoded.len()], "{what}");
    }
    frames
}

/// Sends `event`, then reads until everything sent so far has decoded; returns how many frames
/// that took.
async fn send_and_decode(
    tx: &mpsc::Sender<Bytes>,
    body: &mut Incoming,
    decoder: &mut flate2::write::GzDecoder<Vec<u8>>,
    sent: &mut Vec<u8>,
    event: &Bytes,
    what: &str,
) -> usize {
    tx.send(event.clone()).await.unwrap();
    sent.extend_from_slice(event);
    read_until_decoded(body, decoder, sent, what).await
}

/// Runs the stream under test in lockstep after `crowd` streams took their first event. Returns
/// (hibernations, wakes) counted by the layer's metrics at the end.
async fn lockstep(proto: Proto, crowd: usize) -> (u64, u64) {
    let metrics = GzipMetrics::new();
    let layer = GzipLayer::new()
        .compress_sse(true)
        // No stream sleeps because of time in this test: only the crowd rule can put it to sleep.
        .hibernate_after(std::time::Duration::from_secs(3600))
        .metrics(metrics.clone());
    let (running, feeds) = server(layer).await;
    let first =
        Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n");
    let mut held = Vec::new();
    for n in 0..crowd {
        let (mut body, sender) = open(running.addr, Proto::Http1).await;
        let tx = feed(&feeds, n).await;
        tx.send(first.clone()).await.unwrap();
        // Bytes go out at the stall that follows the event: the stream holds its state and has
        // passed its first stall.
        timeout(HANG, body.frame())
            .await
            .expect("the crowd stream's first event arrives")
            .unwrap()
            .unwrap();
        held.push((body, sender, tx));
    }
    assert_eq!(metrics.hibernations(), 0, "the crowd keeps its states");

    let (mut body, _sender) = open(running.addr, proto).await;
    let tx = feed(&feeds, crowd).await;
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let mut sent = Vec::new();
    for (k, event) in events().iter().enumerate() {
        let what = format!("{proto:?}: event {k}");
        send_and_decode(&tx, &mut body, &mut decoder, &mut sent, event, &what).await;
        if k == 0 && crowd >= CROWD {
            assert_eq!(
                metrics.hibernated_streams(),
                1,
                "{proto:?}: a crowded layer's new stream sleeps at its first stall"
            );
        }
    }
    drop(tx);
    while let Some(frame) = timeout(HANG, body.frame()).await.expect("the body ends") {
        if let Ok(data) = frame.unwrap().into_data() {
            decoder.write_all(&data).unwrap();
        }
    }
    assert_eq!(
        decoder.finish().unwrap(),
        sent,
        "{proto:?}: the whole member"
    );
    drop(held);
    (metrics.hibernations(), metrics.wakes())
}

#[tokio::test]
async fn http1_a_crowded_layers_new_stream_sleeps_at_its_first_stall_and_every_event_decodes_in_lockstep(
) {
    assert_eq!(lockstep(Proto::Http1, CROWD).await, (1, 1));
}

#[tokio::test]
async fn http2_a_crowded_layers_new_stream_sleeps_at_its_first_stall_and_every_event_decodes_in_lockstep(
) {
    assert_eq!(lockstep(Proto::Http2, CROWD).await, (1, 1));
}

/// The control: the same exchange in a layer holding one state fewer never sleeps.
#[tokio::test]
async fn http1_without_a_crowd_the_stream_keeps_its_state() {
    assert_eq!(lockstep(Proto::Http1, CROWD - 1).await, (0, 0));
}

/// What the stream does after its burst and its sleep.
#[derive(Clone, Copy, Debug)]
enum AfterSleep {
    /// One more event: it wakes, and the event decodes from the first frame after the burst.
    Event,
    /// The handler ends the body: the member's end is the first frame after the burst.
    End,
}

/// A burst of events in lockstep, then silence until the layer reports the stream asleep, then
/// `after`. Returns the data frames the client received after the burst.
async fn burst_then_silence(proto: Proto, after: AfterSleep) -> usize {
    let metrics = GzipMetrics::new();
    let layer = GzipLayer::new()
        .compress_sse(true)
        .hibernate_after(Duration::from_millis(100))
        .metrics(metrics.clone());
    let (running, feeds) = server(layer).await;
    let (mut body, _sender) = open(running.addr, proto).await;
    let tx = feed(&feeds, 0).await;
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let mut sent = Vec::new();
    let events = events();
    let (burst, next) = events.split_at(events.len() - 1);
    for (k, event) in burst.iter().enumerate() {
        let what = format!("{proto:?}: event {k}");
        send_and_decode(&tx, &mut body, &mut decoder, &mut sent, event, &what).await;
    }
    // Silence, until the idle timer has put the stream to sleep. A hang limit only detects
    // failure.
    let give_up = Instant::now() + HANG;
    while metrics.hibernated_streams() == 0 {
        assert!(
            Instant::now() < give_up,
            "{proto:?}: the silent stream never slept"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let frames = match after {
        AfterSleep::Event => {
            let what = format!("{proto:?}: woken");
            let frames =
                send_and_decode(&tx, &mut body, &mut decoder, &mut sent, &next[0], &what).await;
            assert_eq!(metrics.wakes(), 1, "{proto:?}");
            // A stream woken after a long silence sleeps again right after the event.
            assert_eq!(metrics.hibernations(), 2, "{proto:?}");
            drop(tx);
            while let Some(frame) = timeout(HANG, body.frame()).await.expect("the body ends") {
                if let Ok(data) = frame.unwrap().into_data() {
                    decoder.write_all(&data).unwrap();
                }
            }
            frames
        }
        AfterSleep::End => {
            drop(tx);
            let mut frames = 0;
            while let Some(frame) = timeout(HANG, body.frame()).await.expect("the body ends") {
                if let Ok(data) = frame.unwrap().into_data() {
                    frames += 1;
                    decoder.write_all(&data).unwrap();
                }
            }
            assert_eq!(metrics.wakes(), 0, "{proto:?}");
            assert_eq!(metrics.hibernations(), 1, "{proto:?}");
            frames
        }
    };
    assert_eq!(
        decoder.finish().unwrap(),
        sent,
        "{proto:?}: the whole member"
    );
    frames
}

#[tokio::test]
async fn http1_a_stream_falling_asleep_after_a_burst_sends_nothing_and_its_next_event_decodes_from_one_frame(
) {
    assert_eq!(burst_then_silence(Proto::Http1, AfterSleep::Event).await, 1);
}

#[tokio::test]
async fn http2_a_stream_falling_asleep_after_a_burst_sends_nothing_and_its_next_event_decodes_from_one_frame(
) {
    assert_eq!(burst_then_silence(Proto::Http2, AfterSleep::Event).await, 1);
}

#[tokio::test]
async fn http1_a_stream_that_ends_asleep_sends_its_end_in_one_frame() {
    assert_eq!(burst_then_silence(Proto::Http1, AfterSleep::End).await, 1);
}

#[tokio::test]
async fn http2_a_stream_that_ends_asleep_sends_its_end_in_one_frame() {
    assert_eq!(burst_then_silence(Proto::Http2, AfterSleep::End).await, 1);
}
