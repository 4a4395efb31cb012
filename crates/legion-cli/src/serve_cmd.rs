//! `legion serve`: LEGION over HTTP for other tools.
//!
//! ```text
//! POST /analyze   body = an image file (PNG / JPEG / WebP)
//!                 -> 200 {"record": <the analyze JSON record>, "overlay_png_base64": "..."}
//! GET  /health    -> 200 {"status": "ok", "model": "<bundle dir>"}
//! ```
//! Requests are answered one at a time (one model). Bodies above `--max-body-mb` get 413, an
//! undecodable image 400, unknown paths 404, other methods 405, all with `{"error": "..."}`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;

use anyhow::{Context, Result};
use base64::Engine;
use clap::Args;
use legion_infer::analyze::Analyzer;
use legion_infer::http::{HttpError, read_message, write_response};
use legion_infer::overlay::render_analysis_overlay;

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
    /// Stop after this many requests (for scripts and tests; default: serve forever).
    #[arg(long)]
    max_requests: Option<usize>,
}

fn json_error(stream: &mut TcpStream, status: u16, message: &str) -> Result<(), HttpError> {
    let body = serde_json::json!({ "error": message }).to_string();
    write_response(stream, status, "application/json", body.as_bytes())
}

fn handle(
    stream: &mut TcpStream,
    analyzer: &Analyzer,
    model_name: &str,
    max_body: usize,
) -> Result<(), HttpError> {
    let request = match read_message(&mut *stream, max_body) {
        Ok(r) => r,
        Err(HttpError::TooLarge { size, limit }) => {
            json_error(
                stream,
                413,
                &format!("body of {size} bytes exceeds the limit of {limit} bytes"),
            )?;
            // Discard what the client is still sending (nothing is kept): closing with unread
            // input would reset the connection and lose the answer.
            stream.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
            let _ = std::io::copy(&mut (&mut *stream).take(size as u64), &mut std::io::sink());
            return Ok(());
        }
        Err(HttpError::Malformed(m)) => return json_error(stream, 400, &m),
        Err(e) => return Err(e),
    };
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/health") => {
            let body = serde_json::json!({"status": "ok", "model": model_name}).to_string();
            write_response(stream, 200, "application/json", body.as_bytes())
        }
        ("POST", "/analyze") => {
            let rgb = match image::load_from_memory(&request.body) {
                Ok(img) => img.to_rgb8(),
                Err(e) => {
                    return json_error(
                        stream,
                        400,
                        &format!("the body is not a decodable image: {e}"),
                    );
                }
            };
            if rgb.width() == 0 || rgb.height() == 0 {
                return json_error(stream, 400, "the image is empty");
            }
            let record = match analyzer.analyze_rgb("upload", rgb.clone()) {
                Ok(r) => r,
                Err(e) => return json_error(stream, 422, &e.to_string()),
            };
            let overlay = render_analysis_overlay(&rgb, &record);
            let mut png = Vec::new();
            if let Err(e) =
                overlay.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            {
                return json_error(stream, 500, &format!("encoding the overlay: {e}"));
            }
            let body = serde_json::json!({
                "record": record,
                "overlay_png_base64": base64::engine::general_purpose::STANDARD.encode(&png),
            })
            .to_string();
            write_response(stream, 200, "application/json", body.as_bytes())
        }
        (_, "/analyze" | "/health") => json_error(stream, 405, "use POST /analyze or GET /health"),
        _ => json_error(stream, 404, "unknown path (POST /analyze, GET /health)"),
    }
}

/// Runs `legion serve`.
///
/// # Errors
/// The model cannot be loaded or the address cannot be bound.
pub fn run_serve(args: ServeArgs) -> Result<ExitCode> {
    let analyzer = args.model.load()?;
    let model_name = args.model.checkpoint.display().to_string();
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let address = listener.local_addr()?;
    println!("listening on http://{address} (POST /analyze, GET /health)");
    std::io::stdout().flush()?;
    let max_body = args.max_body_mb * 1024 * 1024;
    let mut served = 0usize;
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("connection failed: {e}");
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        if let Err(e) = handle(&mut stream, &analyzer, &model_name, max_body) {
            eprintln!("request from {peer}: {e}");
        }
        served += 1;
        if args.max_requests.is_some_and(|n| served >= n) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
