//! A minimal HTTP/1.1 client and request reader on `std::net`, enough to call a local
//! generator endpoint and to serve `legion serve`, without an HTTP stack dependency.
//! Plain `http://` only: put a TLS-terminating proxy in front of remote endpoints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Errors of the HTTP helpers (plain messages; callers wrap them with the URL or peer).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http://host[:port]/path`.
    #[error("unsupported URL `{0}` (expected http://host[:port]/path; https is not supported)")]
    Url(String),
    /// Connecting, sending or receiving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not HTTP/1.x, or too much of it.
    #[error("malformed HTTP message: {0}")]
    Malformed(String),
    /// A body is larger than allowed.
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced or received size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// An HTTP response or request: status (0 for requests), headers (lower-case names), body.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Request method (empty for responses).
    pub method: String,
    /// Request path (empty for responses).
    pub path: String,
    /// Response status (0 for requests).
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Message {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Longest accepted header section.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Reads one HTTP/1.x message (request or response) with a body of at most `max_body` bytes
/// (`Content-Length` or chunked; a response without either is read to EOF).
///
/// # Errors
/// [`HttpError::Malformed`], [`HttpError::TooLarge`], [`HttpError::Io`].
pub fn read_message<R: Read>(reader: R, max_body: usize) -> Result<Message, HttpError> {
    let mut reader = BufReader::new(reader);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let first = first.trim_end().to_string();
    let parts: Vec<&str> = first.splitn(3, ' ').collect();
    let (method, path, status) = if first.starts_with("HTTP/1.") {
        let status = parts
            .get(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| HttpError::Malformed(format!("status line `{first}`")))?;
        (String::new(), String::new(), status)
    } else if parts.len() == 3 && parts[2].starts_with("HTTP/1.") {
        (parts[0].to_string(), parts[1].to_string(), 0)
    } else {
        return Err(HttpError::Malformed(format!("first line `{first}`")));
    };
    let mut headers = Vec::new();
    let mut header_bytes = 0;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        header_bytes += n;
        if header_bytes > MAX_HEADER_BYTES {
            return Err(HttpError::Malformed("header section too large".into()));
        }
        let line = line.trim_end();
        if n == 0 || line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("header line `{line}`")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut message = Message {
        method,
        path,
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = message
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size_text = size_line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| HttpError::Malformed(format!("chunk size `{size_text}`")))?;
            if size == 0 {
                break;
            }
            if message.body.len() + size > max_body {
                return Err(HttpError::TooLarge {
                    size: message.body.len() + size,
                    limit: max_body,
                });
            }
            let start = message.body.len();
            message.body.resize(start + size, 0);
            reader.read_exact(&mut message.body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else if let Some(length) = message.header("content-length") {
        let size: usize = length
            .parse()
            .map_err(|_| HttpError::Malformed(format!("content-length `{length}`")))?;
        if size > max_body {
            return Err(HttpError::TooLarge {
                size,
                limit: max_body,
            });
        }
        message.body.resize(size, 0);
        reader.read_exact(&mut message.body)?;
    } else if message.status != 0 {
        reader
            .by_ref()
            .take(max_body as u64 + 1)
            .read_to_end(&mut message.body)?;
        if message.body.len() > max_body {
            return Err(HttpError::TooLarge {
                size: message.body.len(),
                limit: max_body,
            });
        }
    }
    Ok(message)
}

/// Writes a response with a body and `Connection: close`.
///
/// # Errors
/// [`HttpError::Io`].
pub fn write_response<W: Write>(
    mut writer: W,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<(), HttpError> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        _ => "Error",
    };
    write!(
        writer,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    writer.write_all(body)?;
    writer.flush()?;
    Ok(())
}

/// `(host:port, path)` of an `http://` URL (port 80 by default).
///
/// # Errors
/// [`HttpError::Url`].
pub fn split_url(url: &str) -> Result<(String, String), HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::Url(url.to_string()));
    }
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// POSTs `body` to `url` and returns the response (any status).
///
/// # Errors
/// [`HttpError`] for a bad URL, a connection failure, a timeout or a malformed response.
pub fn post(
    url: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
    max_response: usize,
) -> Result<Message, HttpError> {
    let (authority, path) = split_url(url)?;
    let mut stream = TcpStream::connect(&authority)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    stream.flush()?;
    read_message(stream, max_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_responses_and_limits() {
        let req = b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        let m = read_message(&req[..], 10).unwrap();
        assert_eq!((m.method.as_str(), m.path.as_str()), ("POST", "/analyze"));
        assert_eq!(m.body, b"abc");
        assert!(matches!(
            read_message(&req[..], 2),
            Err(HttpError::TooLarge { size: 3, limit: 2 })
        ));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let m = read_message(&chunked[..], 100).unwrap();
        assert_eq!((m.status, m.body.as_slice()), (200, &b"abcde"[..]));
        let mut out = Vec::new();
        write_response(&mut out, 413, "text/plain", b"no").unwrap();
        let m = read_message(&out[..], 100).unwrap();
        assert_eq!(
            (m.status, m.header("Content-Type")),
            (413, Some("text/plain"))
        );
        assert_eq!(
            split_url("http://localhost:8000/inpaint").unwrap(),
            ("localhost:8000".to_string(), "/inpaint".to_string())
        );
        assert_eq!(split_url("http://h").unwrap().0, "h:80");
        assert!(split_url("https://h/").is_err());
    }
}
