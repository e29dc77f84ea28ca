//! `tower_gzip::GzipLayer` on a plain hyper 1.x server, without a web framework.
//!
//! A `tower::service_fn` is wrapped with `ServiceBuilder::new().layer(GzipLayer::new())` and served
//! by `hyper_util::server::conn::auto::Builder`, so the same port speaks HTTP/1.1 and HTTP/2
//! (h2c with prior knowledge).
//!
//! | route     | what it shows                                                                 |
//! |-----------|-------------------------------------------------------------------------------|
//! | `/`       | a few KB of HTML, compressed                                                  |
//! | `/stream` | NDJSON produced by a task over a channel, one line every 200 ms; compressed, and each line is flushed to the client as soon as it is sent |
//!
//! Run it with:
//!
//! ```text
//! cargo run --example hyper
//! ```
//!
//! and use the `curl` commands it prints. `PORT` changes the port (default 3001).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tower::{service_fn, ServiceBuilder};
use tower_gzip::GzipLayer;

type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = std::env::var("PORT")
        .ok()
        .map(|port| port.parse::<u16>())
        .transpose()?
        .unwrap_or(3001);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(addr).await?;

    let page = Bytes::from(index_html());
    let service = ServiceBuilder::new()
        .layer(GzipLayer::new())
        .service(service_fn(move |request: Request<Incoming>| {
            let page = page.clone();
            async move { Ok::<_, Infallible>(route(request, page)) }
        }));

    let url = format!("http://{addr}");
    println!("tower-gzip hyper example listening on {url}");
    println!("  curl -s --compressed -D - -o /dev/null {url}/          # HTML, gzip");
    println!(
        "  curl -sN --compressed -D - {url}/stream                # NDJSON, gzip, line by line"
    );
    println!(
        "  curl -sN --compressed --http2-prior-knowledge -D - {url}/stream   # the same over h2c"
    );

    loop {
        let (tcp, remote) = listener.accept().await?;
        // Small writes (one line each) should not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let result = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            if let Err(err) = result {
                eprintln!("connection from {remote} failed: {err}");
            }
        });
    }
}

fn route(request: Request<Incoming>, page: Bytes) -> Response<ResponseBody> {
    match request.uri().path() {
        "/" => Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(Full::new(page).boxed_unsync())
            .unwrap(),
        "/stream" => Response::builder()
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(ndjson_stream())
            .unwrap(),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found\n")).boxed_unsync())
            .unwrap(),
    }
}

/// An NDJSON body fed by a producer task: one line every 200 ms, as a handler writing progress
/// updates or model output would.
fn ndjson_stream() -> ResponseBody {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        for i in 0..20 {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let line = format!(
                "{{\"seq\":{i},\"message\":\"event number {i} from the producer task\"}}\n"
            );
            if tx.send(Bytes::from(line)).await.is_err() {
                return; // the client went away
            }
        }
    });
    let frames = ReceiverStream::new(rx).map(|line| Ok::<_, Infallible>(Frame::data(line)));
    StreamBody::new(frames).boxed_unsync()
}

fn index_html() -> String {
    let mut html = String::from(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>tower-gzip on hyper</title></head>\n<body>\n<h1>tower-gzip on hyper</h1>\n<p>This page is compressed by <code>GzipLayer</code>. Try <a href=\"/stream\">/stream</a> for a streamed NDJSON body.</p>\n",
    );
    for i in 1..=30 {
        html.push_str(&format!(
            "<section><h2>Section {i}</h2><p>Gzip compresses repetitive markup very well: headings, \
             paragraphs and class names repeat across a page, and the deflate window finds them.</p></section>\n"
        ));
    }
    html.push_str("</body>\n</html>\n");
    html
}
