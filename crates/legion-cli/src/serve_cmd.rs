//! `legion serve`: LEGION over HTTP for other tools.
//!
//! ```text
//! POST /analyze   body = an image file (PNG / JPEG / WebP)
//!                 -> 200 {"record": <the analyze JSON record>, "overlay_png_base64": "..."}
//! GET  /health    -> 200 {"status": "ok", "model": "<bundle dir>", "queued": N}
//! ```
//! Errors are `{"error": "..."}`: 400 an undecodable (or truncated) image or a malformed request,
//! 404 unknown paths, 405 other methods, 408 a body not received within `--request-timeout-s`,
//! 413 a body above `--max-body-mb`, 422 an image the model refuses, 503 the model queue is full.
//!
//! HTTP is hyper's HTTP/1 server on a single-threaded tokio runtime: a maintained parser, and
//! thousands of idle or slow connections cost a task each rather than a thread. Why not
//! `tiny_http` (fewer dependencies): it sets no socket timeouts, so one client that sends half a
//! header holds a worker forever. Connections are served concurrently (up to
//! `--max-connections`; further ones wait in the kernel's accept backlog). A client gets
//! `--request-timeout-s` to send its header (hyper's header read timeout, which also closes idle
//! keep-alive connections) and as long again for the body, then the connection is closed (no
//! header) or answered 408 (no body). An upload is decoded strictly on tokio's blocking pool, so
//! a bad image gets its 400 whatever the model is doing. The model runs on one thread of its
//! own, fed through a bounded queue of `--queue` images: when it is full, `/analyze` answers 503
//! at once instead of piling up memory, and `/health` keeps answering.

use std::convert::Infallible;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use clap::Args;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use image::RgbImage;
use legion_infer::analyze::Analyzer;
use legion_infer::overlay::render_analysis_overlay;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::analyze_cmd::ModelArgs;

/// Arguments of `legion serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 = any free port; the bound address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Largest accepted request body, MiB.
    #[arg(long, default_value_t = 32)]
    max_body_mb: usize,
    /// Seconds a client gets to send a request header, and again its body.
    #[arg(long, default_value_t = 10)]
    request_timeout_s: u64,
    /// Connections served at once; more wait in the accept backlog.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Analyses waiting for the model beyond the one running; more get 503.
    #[arg(long, default_value_t = 8)]
    queue: usize,
    /// Stop after this many answered requests (for scripts and tests; default: serve forever).
    #[arg(long)]
    max_requests: Option<usize>,
}

/// One decoded `/analyze` image for the model thread.
struct Job {
    rgb: RgbImage,
    reply: oneshot::Sender<Response<Full<Bytes>>>,
}

/// What every connection task shares.
struct Shared {
    jobs: mpsc::Sender<Job>,
    model_name: String,
    max_body: usize,
    body_timeout: Duration,
    max_requests: Option<usize>,
    answered: AtomicUsize,
    done: Notify,
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &serde_json::json!({ "error": message }))
}

/// Decodes an uploaded image strictly (a truncated or corrupt file is refused), off the
/// runtime thread; the error response says why.
async fn decode_upload(body: Bytes) -> Result<RgbImage, Response<Full<Bytes>>> {
    let decoded = tokio::task::spawn_blocking(move || {
        legion_data::image_io::decode_rgb_bytes(&body, Path::new("<request body>"))
    })
    .await;
    match decoded {
        Ok(Ok(rgb)) if rgb.width() > 0 && rgb.height() > 0 => Ok(rgb),
        Ok(Ok(_)) => Err(json_error(StatusCode::BAD_REQUEST, "the image is empty")),
        Ok(Err(e)) => Err(json_error(
            StatusCode::BAD_REQUEST,
            &format!("the body is not a decodable image: {e}"),
        )),
        Err(e) => Err(json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("decoding failed: {e}"),
        )),
    }
}

/// Analyses and renders one uploaded image (on the model thread).
fn analyze_upload(analyzer: &Analyzer, rgb: RgbImage) -> Response<Full<Bytes>> {
    let record = match analyzer.analyze_rgb("upload", rgb.clone()) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    };
    let overlay = render_analysis_overlay(&rgb, &record);
    let mut png = Vec::new();
    if let Err(e) = overlay.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png) {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("encoding the overlay: {e}"),
        );
    }
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "record": record,
            "overlay_png_base64": base64::engine::general_purpose::STANDARD.encode(&png),
        }),
    )
}

/// Reads the body within the size and time limits, or says which limit it broke.
async fn read_body(
    request: Request<Incoming>,
    shared: &Shared,
) -> Result<Bytes, Response<Full<Bytes>>> {
    let too_large = |size: &str| {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "body of {size} bytes exceeds the limit of {} bytes",
                shared.max_body
            ),
        )
    };
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = announced.filter(|&size| size > shared.max_body as u64) {
        // Read and drop what the client is still sending, for a moment: closing a socket with
        // unread input resets the connection, and the client could lose the answer.
        let mut body = request.into_body();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await;
        return Err(too_large(&size.to_string()));
    }
    let limited = Limited::new(request.into_body(), shared.max_body);
    match tokio::time::timeout(shared.body_timeout, limited.collect()).await {
        Err(_) => Err(json_error(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the body did not arrive within {} s",
                shared.body_timeout.as_secs()
            ),
        )),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large("more than that")),
        Ok(Err(e)) => Err(json_error(
            StatusCode::BAD_REQUEST,
            &format!("reading the body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Queues an analysis and waits for its answer; 503 at once when the queue is full.
async fn submit(jobs: &mpsc::Sender<Job>, rgb: RgbImage) -> Response<Full<Bytes>> {
    let stopped = || {
        json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the model thread stopped",
        )
    };
    let (reply, answer) = oneshot::channel();
    match jobs.try_send(Job { rgb, reply }) {
        Ok(()) => answer.await.unwrap_or_else(|_| stopped()),
        Err(mpsc::error::TrySendError::Full(_)) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model queue is full; retry later",
        ),
        Err(mpsc::error::TrySendError::Closed(_)) => stopped(),
    }
}

async fn route(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/health") => json_response(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ok",
                "model": shared.model_name,
                "queued": shared.jobs.max_capacity() - shared.jobs.capacity(),
            }),
        ),
        (&Method::POST, "/analyze") => {
            let body = match read_body(request, shared).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            match decode_upload(body).await {
                Ok(rgb) => submit(&shared.jobs, rgb).await,
                Err(response) => response,
            }
        }
        (_, "/analyze" | "/health") => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST /analyze or GET /health",
        ),
        _ => json_error(
            StatusCode::NOT_FOUND,
            "unknown path (POST /analyze, GET /health)",
        ),
    }
}

/// Answers one request and counts it towards `--max-requests`; the last one closes its
/// connection and stops the server.
async fn serve_request(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = route(request, &shared).await;
    let answered = shared.answered.fetch_add(1, Ordering::SeqCst) + 1;
    if shared.max_requests.is_some_and(|n| answered >= n) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        shared.done.notify_one();
    }
    Ok(response)
}

/// Runs the model on the current thread until every sender is gone.
fn model_loop(analyzer: Analyzer, mut jobs: mpsc::Receiver<Job>) {
    while let Some(job) = jobs.blocking_recv() {
        let response = analyze_upload(&analyzer, job.rgb);
        // The client may have gone; its answer is then dropped.
        let _ = job.reply.send(response);
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    header_timeout: Duration,
    max_connections: usize,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shared.done.notified() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                serve_request(request, Arc::clone(&shared))
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::info!(%peer, error = %e, "connection closed with an error");
            }
            drop(slot);
        });
        // Reap finished connections so the set does not grow with the server's lifetime.
        while connections.try_join_next().is_some() {}
    }
    // Let the answers already being written go out (bounded: clients may hold sockets open).
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Runs `legion serve`.
///
/// # Errors
/// The model cannot be loaded, the address cannot be bound or the runtime cannot start.
pub fn run_serve(args: ServeArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        args.max_connections > 0,
        "--max-connections must be at least 1"
    );
    anyhow::ensure!(args.queue > 0, "--queue must be at least 1");
    anyhow::ensure!(
        args.request_timeout_s > 0,
        "--request-timeout-s must be at least 1"
    );
    let analyzer = args.model.load()?;
    let (jobs, queue) = mpsc::channel(args.queue);
    let model_thread = std::thread::Builder::new()
        .name("legion-model".into())
        .spawn(move || model_loop(analyzer, queue))
        .context("starting the model thread")?;
    let timeout = Duration::from_secs(args.request_timeout_s);
    let shared = Arc::new(Shared {
        jobs,
        model_name: args.model.checkpoint.display().to_string(),
        max_body: args.max_body_mb * 1024 * 1024,
        body_timeout: timeout,
        max_requests: args.max_requests,
        answered: AtomicUsize::new(0),
        done: Notify::new(),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("binding {}:{}", args.host, args.port))?;
        let address = listener.local_addr()?;
        println!("listening on http://{address} (POST /analyze, GET /health)");
        std::io::stdout().flush()?;
        accept_loop(listener, shared, timeout, args.max_connections).await;
        anyhow::Ok(())
    })?;
    // Dropping the runtime drops the last queue sender, which ends the model thread.
    drop(runtime);
    model_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the model thread panicked"))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_answers_503_at_once_and_a_free_slot_waits_for_the_model() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (jobs, mut queue) = mpsc::channel(1);
            // Nobody takes jobs yet: the first fills the queue, the second is refused.
            let first = tokio::spawn({
                let jobs = jobs.clone();
                async move { submit(&jobs, RgbImage::new(1, 1)).await }
            });
            tokio::task::yield_now().await;
            let refused = submit(&jobs, RgbImage::new(2, 2)).await;
            assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
            // The model answers the queued one.
            let job = queue.recv().await.unwrap();
            assert_eq!(job.rgb.dimensions(), (1, 1));
            job.reply
                .send(json_response(StatusCode::OK, &serde_json::json!({})))
                .unwrap();
            assert_eq!(first.await.unwrap().status(), StatusCode::OK);
        });
    }
}
