//! `legion serve` over loopback: answers, refusals, timeouts, and a bounded load test.
//!
//! The load test (`serve_survives_mixed_load_with_slow_and_bad_clients`) sends
//! `LEGION_SERVE_LOAD_REQUESTS` requests (default 500) from 16 client threads: valid images,
//! `/health`, truncated and non-image bodies, oversized and half-sent bodies, malformed request
//! lines, and clients that send half a header and wait. It checks that every well-formed request
//! is answered (200, or 503 when the model queue is full), every bad one is refused with a 4xx,
//! slow clients are cut off by the timeout while `/health` keeps answering, and the server's
//! peak RSS stays bounded; with `--nocapture` it prints latency percentiles and peak RSS.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use legion_infer::testing::SCRIPTED_PHRASE;

mod common;
use common::{bundle, test_image};

/// A running `legion serve`, killed when dropped (also when an assertion fails first).
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_legion"))
            .args(["serve", "--port", "0", "--max-body-mb", "1"])
            .args(["--max-new-tokens", "16", "--checkpoint"])
            .arg(model)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Self { child, address }
    }

    /// Peak resident set size, KiB (`VmHWM`).
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` on a fresh connection and reads until the server closes it. Returns the
/// status (`None`: closed without an answer) and the body.
fn exchange(address: &str, request: &[u8]) -> (Option<u16>, serde_json::Value) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // A refused oversized body may be cut off while it is still being sent: keep going to
    // read the answer that came before.
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> (Option<u16>, serde_json::Value) {
    let text = String::from_utf8_lossy(response);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

#[test]
fn serve_answers_images_with_records_and_rejects_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let model = bundle(dir.path());
    let mut server = Server::start(&model, &["--max-requests", "8"]);
    let address = server.address.clone();

    let (status, body) = exchange(&address, HEALTH);
    assert_eq!((status, body["status"].as_str()), (Some(200), Some("ok")));

    let image = std::fs::read(test_image(0)).unwrap();
    let (status, body) = exchange(&address, &request("POST", "/analyze", &image));
    assert_eq!(status, Some(200), "{body}");
    assert_eq!(body["record"]["artifacts"][0]["phrase"], SCRIPTED_PHRASE);
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        body["overlay_png_base64"].as_str().unwrap(),
    )
    .unwrap();
    assert!(image::load_from_memory(&png).is_ok());

    let (status, body) = exchange(&address, &request("POST", "/analyze", b"not an image"));
    assert_eq!(status, Some(400), "{body}");
    assert!(body["error"].as_str().unwrap().contains("image"));
    // A truncated image is refused, not analysed with invented pixels.
    let (status, body) = exchange(
        &address,
        &request("POST", "/analyze", &image[..image.len() / 2]),
    );
    assert_eq!(status, Some(400), "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("request body"),
        "{body}"
    );
    let (status, _) = exchange(
        &address,
        &request("POST", "/analyze", &vec![0u8; 2 * 1024 * 1024]),
    );
    assert_eq!(status, Some(413));
    let (status, _) = exchange(&address, &request("POST", "/nowhere", b""));
    assert_eq!(status, Some(404));
    let (status, _) = exchange(&address, &request("GET", "/analyze", b""));
    assert_eq!(status, Some(405));
    let (status, _) = exchange(&address, b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(status, Some(400));
    // The malformed request is refused by the HTTP layer and not counted: one more ends the run.
    let (status, _) = exchange(&address, HEALTH);
    assert_eq!(status, Some(200));
    assert!(server.child.wait().unwrap().success());
}

/// What one client request was and what came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Analyze,
    Health,
    NotAnImage,
    TruncatedImage,
    Oversized,
    Malformed,
    WrongPath,
    HalfSentBody,
    HalfSentHeader,
}

const KINDS: [Kind; 9] = [
    Kind::Analyze,
    Kind::Health,
    Kind::NotAnImage,
    Kind::TruncatedImage,
    Kind::Oversized,
    Kind::Malformed,
    Kind::WrongPath,
    Kind::HalfSentBody,
    Kind::HalfSentHeader,
];

struct Outcome {
    kind: Kind,
    status: Option<u16>,
    elapsed: Duration,
}

/// Sends a header and half a body (or half a header), then waits for the server to answer or
/// close; returns the status if any.
fn stall(address: &str, partial: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(partial).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    parse_response(&response).0
}

fn send(kind: Kind, address: &str, image: &[u8]) -> Option<u16> {
    match kind {
        Kind::Analyze => exchange(address, &request("POST", "/analyze", image)).0,
        Kind::Health => exchange(address, HEALTH).0,
        Kind::NotAnImage => exchange(address, &request("POST", "/analyze", b"GIF89a????")).0,
        Kind::TruncatedImage => {
            exchange(
                address,
                &request("POST", "/analyze", &image[..image.len() / 3]),
            )
            .0
        }
        Kind::Oversized => {
            exchange(
                address,
                &request("POST", "/analyze", &vec![7u8; 1024 * 1024 + 1]),
            )
            .0
        }
        Kind::Malformed => {
            exchange(
                address,
                b"POST /analyze HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            )
            .0
        }
        Kind::WrongPath => exchange(address, &request("DELETE", "/admin", b"")).0,
        Kind::HalfSentBody => {
            let full = request("POST", "/analyze", image);
            stall(address, &full[..full.len() - image.len() / 2])
        }
        Kind::HalfSentHeader => stall(
            address,
            b"POST /analyze HTTP/1.1\r\nHost: slow\r\nContent-Le",
        ),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn serve_survives_mixed_load_with_slow_and_bad_clients() {
    let total: usize = std::env::var("LEGION_SERVE_LOAD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    const CLIENTS: usize = 16;
    const TIMEOUT_S: u64 = 2;
    let dir = tempfile::tempdir().unwrap();
    let model = bundle(dir.path());
    let server = Server::start(
        &model,
        &[
            "--request-timeout-s",
            "2",
            "--queue",
            "4",
            "--max-connections",
            "64",
        ],
    );
    let image = std::fs::read(test_image(1)).unwrap();
    let outcomes = Mutex::new(Vec::with_capacity(total));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (address, image, outcomes) = (&server.address, &image, &outcomes);
            scope.spawn(move || {
                // Mostly valid traffic; every kind of bad request shows up on every client.
                for i in (client..total).step_by(CLIENTS) {
                    let kind = if i % 3 == 0 {
                        KINDS[2 + (i / 3) % 7]
                    } else {
                        KINDS[i % 2]
                    };
                    let sent = Instant::now();
                    let status = send(kind, address, image);
                    outcomes.lock().unwrap().push(Outcome {
                        kind,
                        status,
                        elapsed: sent.elapsed(),
                    });
                }
            });
        }
        // While slow clients hold connections, /health answers promptly.
        let address = &server.address;
        scope.spawn(move || {
            let holders: Vec<TcpStream> = (0..8)
                .map(|_| {
                    let mut s = TcpStream::connect(address).unwrap();
                    s.write_all(b"GET /health HTTP/1.1\r\nHo").unwrap();
                    s
                })
                .collect();
            let asked = Instant::now();
            let (status, _) = exchange(address, HEALTH);
            assert_eq!(status, Some(200));
            assert!(
                asked.elapsed() < Duration::from_secs(TIMEOUT_S),
                "{:?}",
                asked.elapsed()
            );
            drop(holders);
        });
    });
    let wall = start.elapsed();
    let outcomes = outcomes.into_inner().unwrap();
    assert_eq!(outcomes.len(), total);

    let mut latencies = Vec::new();
    let mut busy = 0;
    for o in &outcomes {
        let ok = match o.kind {
            Kind::Analyze => {
                busy += usize::from(o.status == Some(503));
                matches!(o.status, Some(200 | 503))
            }
            Kind::Health => o.status == Some(200),
            Kind::NotAnImage | Kind::TruncatedImage | Kind::Malformed => o.status == Some(400),
            Kind::Oversized => o.status == Some(413),
            Kind::WrongPath => o.status == Some(404),
            Kind::HalfSentBody => o.status == Some(408),
            // No header, no answer: the connection is closed after the timeout.
            Kind::HalfSentHeader => {
                o.status.is_none()
                    && o.elapsed >= Duration::from_millis(TIMEOUT_S * 1000 - 200)
                    && o.elapsed < Duration::from_secs(TIMEOUT_S * 5)
            }
        };
        assert!(
            ok,
            "{:?}: status {:?} after {:?}",
            o.kind, o.status, o.elapsed
        );
        if matches!(o.kind, Kind::Analyze | Kind::Health) && o.status == Some(200) {
            latencies.push(o.elapsed);
        }
    }
    // The server is alive and still answers after all that.
    assert_eq!(exchange(&server.address, HEALTH).0, Some(200));
    let peak_kib = server.peak_rss_kib();
    latencies.sort();
    eprintln!(
        "serve load: {total} requests from {CLIENTS} clients in {:.1} s; {} answered 200 \
         (analyze + health): latency p50 {:?}, p90 {:?}, p99 {:?}, max {:?}; {busy} analyze \
         requests got 503 (queue 4); server peak RSS {:.1} MiB",
        wall.as_secs_f64(),
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        peak_kib as f64 / 1024.0
    );
    assert!(peak_kib < 1024 * 1024, "peak RSS {peak_kib} KiB");
}
