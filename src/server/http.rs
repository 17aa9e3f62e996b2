//! Just enough HTTP/1.1 for the API: one request per connection (every response says
//! `Connection: close`), bodies sized by `Content-Length`, responses with a length or, for
//! server-sent events, chunked. Every limit is checked before anything is allocated for it,
//! so no request can make the server allocate more than `max_body` plus a few kilobytes.

use std::io::{self, BufRead, Read, Write};

/// Most bytes of request line plus headers.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub enum ReadError {
    /// The connection closed or failed before a whole request came: nothing to answer.
    Closed,
    /// A request to refuse with this status. `drain`: body bytes to read and throw away
    /// first, so the client is not reset while still sending.
    Bad { status: u16, message: String, drain: usize },
}

fn bad(status: u16, message: impl Into<String>) -> ReadError {
    ReadError::Bad { status, message: message.into(), drain: 0 }
}

/// One line of the head, without its line ending; `budget` is what is left of `MAX_HEAD`.
fn read_line(r: &mut impl BufRead, budget: &mut usize) -> Result<String, ReadError> {
    let mut buf = Vec::new();
    let n = (&mut *r).take(*budget as u64 + 1).read_until(b'\n', &mut buf).map_err(|_| ReadError::Closed)?;
    if n > *budget {
        return Err(bad(431, format!("the request line and headers exceed {MAX_HEAD} bytes")));
    }
    if n == 0 || buf.last() != Some(&b'\n') {
        return Err(ReadError::Closed);
    }
    *budget -= n;
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| bad(400, "the request head is not valid UTF-8"))
}

/// Read one request. `w` is the same connection, for `100 Continue`.
pub fn read_request(r: &mut impl BufRead, w: &mut impl Write, max_body: usize) -> Result<Request, ReadError> {
    let mut budget = MAX_HEAD;
    let mut line = read_line(r, &mut budget)?;
    // Clients may send empty lines between requests (RFC 9112 2.2).
    while line.is_empty() {
        line = read_line(r, &mut budget)?;
    }
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(bad(400, format!("malformed request line {line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad(505, format!("unsupported protocol {version:?}: HTTP/1.1 only")));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad(400, format!("malformed method {method:?}")));
    }
    let path = target.split('?').next().unwrap_or("").to_string();

    let mut headers = Vec::new();
    loop {
        let h = read_line(r, &mut budget)?;
        if h.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(bad(431, format!("more than {MAX_HEADERS} headers")));
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(bad(400, format!("malformed header line {h:?}")));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad(400, format!("malformed header name {name:?}")));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let mut req = Request { method: method.to_string(), path, headers, body: Vec::new() };

    if req.header("transfer-encoding").is_some() {
        return Err(bad(411, "chunked request bodies are not supported: send a Content-Length"));
    }
    let mut length: Option<usize> = None;
    for (_, v) in req.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        let n = v.parse::<u64>().map_err(|_| bad(400, format!("Content-Length {v:?} is not a number")))?;
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if length.is_some_and(|l| l != n) {
            return Err(bad(400, "conflicting Content-Length headers"));
        }
        length = Some(n);
    }
    let length = length.unwrap_or(0);
    if length > max_body {
        // Read a moderately oversized body so the client gets to see the answer; close on
        // anything larger.
        let drain = if length <= max_body.saturating_mul(4) { length } else { 0 };
        let message = format!("the request body is {length} bytes, more than the limit of {max_body}");
        return Err(ReadError::Bad { status: 413, message, drain });
    }
    if length > 0 {
        if req.header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .and_then(|_| w.flush())
                .map_err(|_| ReadError::Closed)?;
        }
        req.body = vec![0; length];
        r.read_exact(&mut req.body).map_err(|_| ReadError::Closed)?;
    }
    Ok(req)
}

/// Read and drop `n` bytes (or until the connection ends).
pub fn drain(r: &mut impl Read, n: usize) {
    let _ = io::copy(&mut (&mut *r).take(n as u64), &mut io::sink());
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A whole response with a body.
pub fn respond(w: &mut impl Write, status: u16, content_type: &str, body: &[u8]) -> io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    )?;
    w.write_all(body)?;
    w.flush()
}

/// The head of a chunked response; follow with `write_chunk`s and `end_chunks`.
pub fn start_chunks(w: &mut impl Write, status: u16, content_type: &str) -> io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        reason(status)
    )?;
    w.flush()
}

/// One chunk, sent at once.
pub fn write_chunk(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(()); // an empty chunk would end the body
    }
    write!(w, "{:x}\r\n", data.len())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

pub fn end_chunks(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], max_body: usize) -> (Result<Request, ReadError>, Vec<u8>) {
        let mut out = Vec::new();
        let r = read_request(&mut io::Cursor::new(raw), &mut out, max_body);
        (r, out)
    }

    fn status(r: Result<Request, ReadError>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(ReadError::Closed) => 0,
            Err(ReadError::Bad { status, .. }) => status,
        }
    }

    #[test]
    fn parses_a_post_with_a_body() {
        let raw = b"POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nabcdEXTRA";
        let (r, out) = parse(raw, 100);
        let r = r.unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/completions"));
        assert_eq!(r.header("content-length"), Some("4"));
        assert_eq!(r.body, b"abcd");
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn rejects_malformed_and_oversized_requests() {
        let cases: &[(&[u8], u16)] = &[
            (b"", 0),
            (b"GET / HTTP/1.1\r\nHost: a", 0),
            (b"GET /\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"get / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\xff: x\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
            (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort", 0),
        ];
        for (raw, want) in cases {
            assert_eq!(status(parse(raw, 100).0), *want, "{:?}", String::from_utf8_lossy(raw));
        }
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(parse(long.as_bytes(), 100).0), 431);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(status(parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes(), 100).0), 431);
    }

    #[test]
    fn writes_chunks() {
        let mut out = Vec::new();
        start_chunks(&mut out, 200, "text/event-stream").unwrap();
        write_chunk(&mut out, b"data: 1\n\n").unwrap();
        write_chunk(&mut out, b"").unwrap();
        end_chunks(&mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(s.ends_with("\r\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n"));
    }
}
