//! HTTP/1.1 on the wire, for calls to peers and the proxy path: message heads parsed in place,
//! bodies framed as RFC 9112 §6 says (passed on as they are, or read whole), and idle upstream
//! connections kept per thread.

use bytes::BytesMut;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The largest message head read: past it a request goes to the full server (which refuses it)
/// and an answer is a bad one.
pub const MAX_HEAD: usize = 64 * 1024;

/// The most header fields one head may have.
pub const MAX_HEADERS: usize = 100;

/// How long an upstream connection is kept unused, as the pooled client keeps one.
const IDLE_FOR: Duration = Duration::from_secs(30);

/// The most idle connections kept for one address.
const IDLE_PER_ADDR: usize = 64;

/// How a message's body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: an answer to HEAD, a 204 or a 304, or a request with no length.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunks, ending with a chunk of size zero and the trailer section.
    Chunked,
    /// Everything until the sender closes the connection.
    UntilClose,
}

/// Names whose values are compared case-insensitively, as header names are.
pub fn is(name: &[u8], wanted: &str) -> bool {
    name.eq_ignore_ascii_case(wanted.as_bytes())
}

/// Whether a comma-separated header value lists `token`.
pub fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Writes one header field line.
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` value: digits only, no sign or space (RFC 9110 §8.6).
pub fn content_length(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
}

/// An answer's head, read from an upstream connection: the positions of its parts in the
/// connection's buffer, which still holds them.
#[derive(Debug)]
pub struct AnswerHead {
    pub status: u16,
    /// Name and value of each field, as ranges of the buffer.
    pub fields: Vec<(Range<usize>, Range<usize>)>,
    /// Where the head ends and the body begins.
    pub len: usize,
    pub framing: Framing,
    /// Whether the connection may carry another request once this answer's body is read.
    pub keep_alive: bool,
}

impl AnswerHead {
    /// Its header fields, still in `buf`, as a map; a field that is not a valid header is left
    /// out.
    pub fn header_map(&self, buf: &[u8]) -> axum::http::HeaderMap {
        use axum::http::{HeaderName, HeaderValue};
        let mut headers = axum::http::HeaderMap::with_capacity(self.fields.len());
        for (name, value) in &self.fields {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(&buf[name.clone()]),
                HeaderValue::from_bytes(&buf[value.clone()]),
            ) {
                headers.append(n, v);
            }
        }
        headers
    }
}

/// Why an answer could not be read: the words a 502 says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the connection closed before the answer was complete")]
    Closed,
    #[error("the answer's head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// Bytes that are not an HTTP/1.x answer at all.
    #[error("{0}")]
    NotHttp(String),
    #[error("the answer is malformed: {0}")]
    Malformed(&'static str),
    #[error("the answer's body is malformed: {0}")]
    BadBody(&'static str),
    #[error("{0}")]
    Io(String),
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// Parses the answer head at the start of `buf`, if it is all there. `head_request` is whether
/// the request was a HEAD, whose answer has no body whatever its fields say.
pub fn parse_answer(buf: &[u8], head_request: bool) -> Result<Option<AnswerHead>, WireError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut storage);
    let len = match answer.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(WireError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(WireError::NotHttp(e.to_string())),
    };
    let status = answer.code.unwrap_or(0);
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut encoded = false;
    let mut keep_alive = answer.version == Some(1);
    let mut fields = Vec::with_capacity(answer.headers.len());
    for field in answer.headers.iter() {
        let (name, value) = (field.name.as_bytes(), field.value);
        if is(name, "content-length") {
            let n = content_length(value).ok_or(WireError::Malformed(
                "a content-length that is not a number",
            ))?;
            if length.is_some_and(|l| l != n) {
                return Err(WireError::Malformed("two different content-lengths"));
            }
            length = Some(n);
        } else if is(name, "transfer-encoding") {
            encoded = true;
            // Only a last coding of `chunked` frames the body; anything else runs to the close.
            chunked = value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if is(name, "connection") {
            if lists(value, "close") {
                keep_alive = false;
            } else if lists(value, "keep-alive") && answer.version == Some(0) {
                keep_alive = true;
            }
        }
        fields.push((at(name), at(value)));
    }
    let framing = if head_request || matches!(status, 100..=199 | 204 | 304) {
        Framing::Empty
    } else if encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    Ok(Some(AnswerHead {
        status,
        fields,
        len,
        framing,
        keep_alive,
    }))
}

/// Finds where a chunked body ends in the bytes passing through, which are passed on unchanged
/// (RFC 9112 §7.1): the sizes, any extensions, the data and the trailer section.
#[derive(Debug, Default)]
pub struct Chunks {
    state: ChunkState,
    size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk's size, in hex; `true` once a digit was seen.
    #[default]
    Size,
    SizeDigits,
    /// Past the size, up to the line's end: extensions.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the empty line that ends the body.
    TrailerStart,
    Trailer,
    EndLf,
    Done,
}

impl Chunks {
    /// Reads `bytes`, the next of the body. `Some(n)`: the body ends after the first `n` of
    /// them.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<Option<usize>, WireError> {
        use ChunkState::*;
        let bad = WireError::BadBody;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                Size | SizeDigits => match (b as char).to_digit(16) {
                    Some(d) => {
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(d)))
                            .ok_or(bad("a chunk size too large"))?;
                        self.state = SizeDigits;
                    }
                    None if self.state == Size => return Err(bad("a chunk without a size")),
                    None => match b {
                        b';' | b' ' | b'\t' => self.state = Extension,
                        b'\r' => self.state = SizeLf,
                        b'\n' => self.after_size(),
                        _ => return Err(bad("a malformed chunk size")),
                    },
                },
                Extension => match b {
                    b'\r' => self.state = SizeLf,
                    b'\n' => self.after_size(),
                    _ => {}
                },
                SizeLf if b == b'\n' => self.after_size(),
                SizeLf => return Err(bad("a chunk size line not ended by CRLF")),
                Data => {
                    let take = self.size.min((bytes.len() - i) as u64);
                    self.size -= take;
                    i += take as usize;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr if b == b'\r' => self.state = DataLf,
                DataCr | DataLf if b == b'\n' => self.state = Size,
                DataCr | DataLf => return Err(bad("a chunk's data not ended by CRLF")),
                TrailerStart => match b {
                    b'\r' => self.state = EndLf,
                    b'\n' => {
                        self.state = Done;
                        return Ok(Some(i + 1));
                    }
                    _ => self.state = Trailer,
                },
                Trailer if b == b'\n' => self.state = TrailerStart,
                Trailer => {}
                EndLf if b == b'\n' => {
                    self.state = Done;
                    return Ok(Some(i + 1));
                }
                EndLf => return Err(bad("the trailer section not ended by CRLF")),
                Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok((self.state == Done).then_some(bytes.len()))
    }

    fn after_size(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data
        };
    }
}

/// The data of a chunked body (whole or cut short), without its framing.
pub fn unchunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        let Some(line_end) = bytes.iter().position(|b| *b == b'\n') else {
            return data;
        };
        let size = std::str::from_utf8(&bytes[..line_end])
            .ok()
            .map(|l| l.split(';').next().unwrap_or("").trim())
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .unwrap_or(0);
        bytes = &bytes[line_end + 1..];
        if size == 0 {
            return data;
        }
        let take = size.min(bytes.len());
        data.extend_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
        bytes = bytes.strip_prefix(b"\r\n").unwrap_or(bytes);
    }
}

/// A connection to an upstream instance, with what has been read from it and not yet used.
#[derive(Debug)]
pub struct Upstream {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// Whether it carried a request before: a failure before any answer then may mean only that
    /// the peer closed it while it sat idle.
    pub reused: bool,
    idle_since: Instant,
}

impl Upstream {
    /// A new connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        // Requests are small and answered at once: waiting to fill a segment only adds latency.
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            reused: false,
            idle_since: Instant::now(),
        })
    }

    /// Sends `head` and reads the answer's head. Within a call's deadline, set by the caller.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        head_request: bool,
    ) -> Result<AnswerHead, WireError> {
        self.stream.write_all(request).await?;
        loop {
            // A 1xx answer (103 Early Hints) comes before the real one and is not passed on.
            if let Some(head) = parse_answer(&self.buf, head_request)? {
                if (100..200).contains(&head.status) {
                    if head.status == 101 {
                        return Err(WireError::Malformed("it switched protocols unasked (101)"));
                    }
                    let _ = self.buf.split_to(head.len);
                    continue;
                }
                return Ok(head);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(8 * 1024);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(WireError::Closed);
            }
        }
    }

    /// Reads the body of the answer whose head is `head` whole, and gives its data (a chunked
    /// body without its framing). Afterwards the connection may carry another request if
    /// `head.keep_alive` and nothing is left in its buffer. Within a call's deadline, set by the
    /// caller.
    pub async fn read_whole(&mut self, head: &AnswerHead) -> Result<bytes::Bytes, WireError> {
        use bytes::Buf;
        self.buf.advance(head.len);
        match head.framing {
            Framing::Empty => Ok(bytes::Bytes::new()),
            Framing::Length(n) => {
                let n = usize::try_from(n).map_err(|_| WireError::BadBody("too large"))?;
                while self.buf.len() < n {
                    // Room for what is still to come, grown as it comes: a length is only what
                    // the peer says.
                    let wanted = (n - self.buf.len()).clamp(4096, 256 * 1024);
                    if self.buf.capacity() - self.buf.len() < wanted {
                        self.buf.reserve(wanted);
                    }
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        return Err(WireError::Closed);
                    }
                }
                Ok(self.buf.split_to(n).freeze())
            }
            Framing::Chunked => {
                let mut chunks = Chunks::default();
                let mut scanned = 0;
                let end = loop {
                    if let Some(end) = chunks.scan(&self.buf[scanned..])? {
                        break scanned + end;
                    }
                    scanned = self.buf.len();
                    if self.read_more().await? == 0 {
                        return Err(WireError::Closed);
                    }
                };
                let framed = self.buf.split_to(end);
                Ok(unchunk(&framed).into())
            }
            Framing::UntilClose => {
                while self.read_more().await? > 0 {}
                Ok(self.buf.split().freeze())
            }
        }
    }

    /// Reads more of the body into the (empty) buffer; 0 at the end of the stream.
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    /// Whether it can carry another request: open, with nothing unasked waiting on it, and not
    /// idle too long. Costs a system call only when the socket has shown activity.
    fn usable(&self, now: Instant) -> bool {
        if now.duration_since(self.idle_since) >= IDLE_FOR || !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        // Closed (0 bytes) or sending unasked: either way, of no further use.
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Idle upstream connections, by address. One per thread (`Peers` keeps them): a connection is
/// driven by the runtime that opened it, and a worker's requests never wait on another thread.
#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Upstream>>>,
}

impl Pool {
    /// An idle connection to `addr` that can still be used, if there is one.
    pub fn take(&self, addr: SocketAddr) -> Option<Upstream> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&addr)?;
        while let Some(conn) = list.pop() {
            if conn.usable(now) {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn`, whose last answer was read whole, for the next request to `addr`.
    pub fn put(&self, addr: SocketAddr, mut conn: Upstream) {
        conn.reused = true;
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < IDLE_PER_ADDR {
            list.push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> AnswerHead {
        parse_answer(text.as_bytes(), false).unwrap().unwrap()
    }

    #[test]
    fn an_answer_is_framed_as_rfc_9112_says() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello");
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(h.len, 46);
        assert!(h.keep_alive);
        assert_eq!(h.fields.len(), 2);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
        assert_eq!(head("HTTP/1.1 200 OK\r\n\r\n").framing, Framing::UntilClose);
        assert_eq!(
            head("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n").framing,
            Framing::Empty
        );
        let to_head = "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n";
        let h = parse_answer(to_head.as_bytes(), true).unwrap().unwrap();
        assert_eq!(h.framing, Framing::Empty);
        assert!(
            !head("HTTP/1.1 200 OK\r\nConnection: Close\r\ncontent-length: 0\r\n\r\n").keep_alive
        );
        assert!(!head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(
            parse_answer(b"HTTP/1.1 200 OK\r\ncontent-le", false)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_malformed_answer_is_refused_with_its_fault() {
        for (text, says) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n",
                "not a number",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "two different",
            ),
            ("INFO {\"server_id\":1}\r\n", "invalid HTTP version"),
        ] {
            let e = parse_answer(text.as_bytes(), false).unwrap_err();
            assert!(e.to_string().contains(says), "{text:?}: {e}");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        assert_eq!(
            parse_answer(huge.as_bytes(), false).unwrap_err(),
            WireError::HeadTooLarge
        );
    }

    #[test]
    fn the_end_of_a_chunked_body_is_found_however_it_is_cut() {
        let body =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\n";
        let after = b"GET /next";
        let mut all = body.to_vec();
        all.extend_from_slice(after);
        // Whole, and cut at every place into two pieces.
        assert_eq!(Chunks::default().scan(&all).unwrap(), Some(body.len()));
        for cut in 0..body.len() {
            let mut chunks = Chunks::default();
            assert_eq!(chunks.scan(&all[..cut]).unwrap(), None, "cut at {cut}");
            assert_eq!(
                chunks.scan(&all[cut..]).unwrap(),
                Some(body.len() - cut),
                "cut at {cut}"
            );
        }
        // Byte by byte.
        let mut chunks = Chunks::default();
        for (i, b) in body.iter().enumerate() {
            let end = chunks.scan(std::slice::from_ref(b)).unwrap();
            assert_eq!(end.is_some(), i == body.len() - 1, "byte {i}");
        }
        assert_eq!(Chunks::default().scan(b"0\r\n\r\n").unwrap(), Some(5));
        assert_eq!(Chunks::default().scan(b"0\n\n").unwrap(), Some(3));
        for bad in [
            &b"zz\r\n"[..],
            b"3\r\nabcX",
            b"FFFFFFFFFFFFFFFFFF\r\n",
            b"\r\n",
        ] {
            assert!(Chunks::default().scan(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_idle_connection_the_peer_closed_is_not_used_again() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::default();
        let open = Upstream::connect(addr).await.unwrap();
        let (kept, _) = listener.accept().await.unwrap();
        pool.put(addr, open);
        assert!(pool.take(addr).is_some(), "an open idle connection is used");
        let closing = Upstream::connect(addr).await.unwrap();
        let (closed, _) = listener.accept().await.unwrap();
        drop(closed);
        // Once the close has reached this side's socket.
        closing.stream.readable().await.unwrap();
        pool.put(addr, closing);
        assert!(
            pool.take(addr).is_none(),
            "a closed one is dropped, not used"
        );
        drop(kept);
    }

    #[test]
    fn the_data_of_a_chunked_body_is_read_whole_or_cut_short() {
        assert_eq!(
            unchunk(b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"),
            b"hello world"
        );
        assert_eq!(unchunk(b"5\r\nhel"), b"hel");
        assert_eq!(unchunk(b""), b"");
    }

    /// The whole body of `answer`, sent by a peer that then closes, as `read_whole` reads it;
    /// also whether the connection was left clean for another request.
    async fn read_whole_of(answer: &'static [u8]) -> (Result<bytes::Bytes, WireError>, bool) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conn = Upstream::connect(addr).await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            // The request read first: a socket closed with unread bytes is reset, not closed.
            let mut request = [0u8; 64];
            let _ = peer.read(&mut request).await;
            // In two writes, so that the body is read in more than one piece.
            let (a, b) = answer.split_at(answer.len() / 2);
            peer.write_all(a).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            peer.write_all(b).await.unwrap();
        });
        let head = conn
            .exchange(b"GET / HTTP/1.1\r\n\r\n", false)
            .await
            .unwrap();
        let body = conn.read_whole(&head).await;
        (body, head.keep_alive && conn.buf.is_empty())
    }

    #[tokio::test]
    async fn a_body_is_read_whole_by_each_framing_and_a_cut_one_is_refused() {
        let (body, clean) =
            read_whole_of(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world").await;
        assert_eq!(body.unwrap(), "hello world");
        assert!(clean);
        let (body, clean) = read_whole_of(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nx: y\r\n\r\n",
        )
        .await;
        assert_eq!(body.unwrap(), "hello world");
        assert!(clean, "the trailer is read too");
        let (body, clean) = read_whole_of(b"HTTP/1.1 200 OK\r\n\r\nuntil the close").await;
        assert_eq!(body.unwrap(), "until the close");
        assert!(!clean, "a body ended by the close ends the connection");
        let (body, _) =
            read_whole_of(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\nhello world").await;
        assert_eq!(body.unwrap_err(), WireError::Closed);
        // A length no memory could hold is not made room for before the bytes come.
        let (body, _) =
            read_whole_of(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000000000\r\n\r\nhi").await;
        assert_eq!(body.unwrap_err(), WireError::Closed);
        let (body, _) =
            read_whole_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel").await;
        assert_eq!(body.unwrap_err(), WireError::Closed);
        let (body, _) =
            read_whole_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").await;
        assert!(matches!(body, Err(WireError::BadBody(_))), "{body:?}");
    }
}
