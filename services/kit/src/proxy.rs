//! The proxy path of a gateway: requests bound for another service are read, sent on and
//! answered as HTTP/1.1 by the kit itself, in the task that holds the client's connection, with
//! the same spans, access log, deadline, balancing, retry and faults as any call. Every other
//! request, and the rest of its connection, goes to the full server (hyper and the app's router).
//! A service that is no gateway is served by the same accept loop and full server alone.
//!
//! Why: per proxied request, hyper's server, its pooled client and axum's layers cost more user
//! time than nginx spends on the whole request (docs/data-path.md). Here a request is parsed in
//! place, its answer's head is rewritten in one buffer, and a small answer goes out in one write.

use crate::client::{PeerError, PeerRequest, Relayed, RelayedAnswer, Wire};
use crate::error::ApiError;
use crate::h1::{self, Framing, write_field as field};
use crate::server::{Kit, Observation};
use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes, BytesMut};
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Request bodies up to this size are taken on the proxy path, read whole so that a failed call
/// may be sent again; a larger one (or one without a length) goes to the full server, which
/// streams it.
pub const WHOLE_UP_TO: usize = 64 * 1024;

/// How long a client has to send the rest of a request it has begun, head and body, as nginx's
/// `client_header_timeout` gives it: past this the connection is closed, so that clients that
/// send a little and stall cannot hold connections for ever.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a gateway tells the kit about its routes.
pub trait Proxy: Send + Sync + 'static {
    /// What the proxy path does with a request, or `None` to leave it to the app's router.
    fn route(&self, method: &Method, path: &str) -> Option<Route>;

    /// The answer to a call that failed.
    fn failed(&self, e: PeerError) -> ApiError;
}

/// A request the proxy path takes, and how.
pub enum Route {
    /// Sent on to `service`; the request's span is named by `route` (`/users/{*rest}`).
    Relay { service: String, route: String },
    /// Answered here by the app, whose `answer` makes the whole answer, as a handler would,
    /// from calls of its own (`Peers::send`, which then go on this worker's connections). The
    /// span is named by `route`. For answers composed of other services' (`/users/{id}/posts`),
    /// which would otherwise pay for the full server as well as for their calls.
    Answer { route: String, answer: Answering },
}

/// An answer the app makes on the proxy path (`Route::Answer`).
pub type Answering = Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a header is the connection's, not the message's: a hop-by-hop one, or one of those
/// the `Connection` header's values (`connection`) list.
fn hop_by_hop<'a>(name: &[u8], mut connection: impl Iterator<Item = &'a [u8]>) -> bool {
    HOP_BY_HOP.iter().any(|h| h1::is(name, h))
        || connection.any(|v| std::str::from_utf8(name).is_ok_and(|name| h1::lists(v, name)))
}

/// The headers of `headers` that belong to the message. A request's length is left to the
/// client that sends it on; an answer's is kept, since its body passes through unchanged.
pub fn end_to_end(headers: &HeaderMap, keep_length: bool) -> HeaderMap {
    let connection = || {
        headers
            .get_all(axum::http::header::CONNECTION)
            .iter()
            .map(HeaderValue::as_bytes)
    };
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str().as_bytes();
        let drop = hop_by_hop(n, connection())
            || h1::is(n, "host")
            || (h1::is(n, "content-length") && !keep_length);
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// One worker's share of the proxy: what its connections need.
pub(crate) struct Worker {
    pub(crate) kit: Arc<Kit>,
    pub(crate) proxy: Arc<dyn Proxy>,
    /// The app with the kit's layers, for what the proxy path does not take.
    pub(crate) router: Router,
    pub(crate) stopping: watch::Receiver<bool>,
}

impl Worker {
    /// A worker serving `router` (the app with the kit's layers) beside `proxy`'s routes, until
    /// `stopping` turns true.
    pub(crate) fn new(
        kit: Arc<Kit>,
        proxy: Arc<dyn Proxy>,
        router: Router,
        stopping: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            kit,
            proxy,
            router,
            stopping,
        })
    }
}

/// Accepts on `listener` until told to stop, then waits for its connections to finish their
/// requests.
pub(crate) async fn serve(listener: TcpListener, worker: Arc<Worker>) -> std::io::Result<()> {
    let stopping = worker.stopping.clone();
    accept(listener, stopping, move |stream| {
        let worker = worker.clone();
        async move { connection(stream, &worker).await }
    })
    .await
}

/// As [`serve`], for a service that is no gateway: every connection goes to the full server
/// from its first byte, with the same bound on a request's head.
pub(crate) async fn serve_router(
    listener: TcpListener,
    router: Router,
    stopping: watch::Receiver<bool>,
) -> std::io::Result<()> {
    accept(listener, stopping.clone(), move |stream| {
        full_server(stream, Bytes::new(), router.clone(), stopping.clone())
    })
    .await
}

/// Accepts on `listener` and serves each connection in a task of its own until `stopping`
/// turns true, then waits for the connections to end.
async fn accept<S, F>(
    listener: TcpListener,
    mut stopping: watch::Receiver<bool>,
    serve_one: S,
) -> std::io::Result<()>
where
    S: Fn(TcpStream) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    // Each connection's task holds a sender; when all are gone, every connection has ended.
    let (alive, mut ended) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // A connection reset while queued is that connection's problem, not the server's.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors, most likely: wait, as axum's server does, rather than spin.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        // A streamed answer goes out as its head, then its body as it arrives: with Nagle's
        // algorithm the second write would wait for the client's (delayed) acknowledgement of
        // the first.
        let _ = stream.set_nodelay(true);
        let (served, alive) = (serve_one(stream), alive.clone());
        tokio::spawn(async move {
            served.await;
            drop(alive);
        });
    }
    drop(listener);
    drop(alive);
    let _ = ended.recv().await;
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// A request the proxy path takes, read off the connection.
struct Incoming {
    method: Method,
    path_and_query: String,
    path_len: usize,
    route: Route,
    headers: HeaderMap,
    head_len: usize,
    body_len: usize,
    /// The client said `Connection: close`.
    close: bool,
}

/// What the start of a connection's buffer holds.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request for the full server: not the proxy's, or one it leaves to it (a body without a
    /// length or a large one, `Expect`, an upgrade, HTTP/1.0, anything malformed).
    Other,
    Proxied(Box<Incoming>),
}

fn parse_request(buf: &[u8], proxy: &dyn Proxy, body_limit: usize) -> Parsed {
    let mut storage = [httparse::EMPTY_HEADER; h1::MAX_HEADERS];
    let mut request = httparse::Request::new(&mut storage);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < h1::MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Other,
    };
    let (Some(1), Some(target), Some(method)) = (request.version, request.path, request.method)
    else {
        return Parsed::Other;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Other;
    };
    if !target.starts_with('/') || method == Method::CONNECT {
        return Parsed::Other;
    }
    let path = target.split('?').next().unwrap_or(target);
    let Some(route) = proxy.route(&method, path) else {
        return Parsed::Other;
    };
    let connection = || {
        request
            .headers
            .iter()
            .filter(|f| h1::is(f.name.as_bytes(), "connection"))
            .map(|f| f.value)
    };
    let mut close = false;
    for value in connection() {
        if h1::lists(value, "upgrade") {
            return Parsed::Other;
        }
        close |= h1::lists(value, "close");
    }
    let mut length: Option<usize> = None;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        if h1::is(name, "transfer-encoding") || h1::is(name, "expect") || h1::is(name, "upgrade") {
            return Parsed::Other;
        }
        if h1::is(name, "content-length") {
            let n = h1::content_length(field.value).and_then(|n| usize::try_from(n).ok());
            match (n, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(l)) if n == l => {}
                _ => return Parsed::Other,
            }
            continue;
        }
        if hop_by_hop(name, connection()) || h1::is(name, "host") {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(field.value),
        ) else {
            return Parsed::Other;
        };
        headers.append(name, value);
    }
    let body_len = length.unwrap_or(0);
    if body_len > WHOLE_UP_TO.min(body_limit) {
        return Parsed::Other;
    }
    Parsed::Proxied(Box::new(Incoming {
        method,
        path_and_query: target.to_string(),
        path_len: path.len(),
        route,
        headers,
        head_len,
        body_len,
        close,
    }))
}

/// Serves one client connection: requests for the proxy here, one after another; from the
/// first that is not, the full server has the connection.
async fn connection(mut stream: TcpStream, worker: &Worker) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = Vec::with_capacity(8 * 1024);
    let mut stopping = worker.stopping.clone();
    loop {
        // When the request now being read must be in whole: set by its first bytes.
        let mut due = None;
        let incoming = loop {
            if !buf.is_empty() {
                match parse_request(&buf, &*worker.proxy, worker.kit.body_limit) {
                    Parsed::Proxied(incoming) => break incoming,
                    // The full server has the connection, with what was read, for the rest
                    // of its life.
                    Parsed::Other => {
                        let (router, stopping) = (worker.router.clone(), worker.stopping.clone());
                        return full_server(stream, buf.freeze(), router, stopping).await;
                    }
                    Parsed::Partial => {}
                }
            }
            let read = if buf.is_empty() {
                // Between requests the connection may be closed to stop; within one, not.
                tokio::select! {
                    read = stream.read_buf(&mut buf) => read,
                    _ = stopping.wait_for(|stop| *stop) => return,
                }
            } else {
                let due = *due.get_or_insert_with(|| tokio::time::Instant::now() + REQUEST_TIMEOUT);
                match tokio::time::timeout_at(due, stream.read_buf(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => return,
                }
            };
            if !matches!(read, Ok(n) if n > 0) {
                return;
            }
        };
        while buf.len() < incoming.head_len + incoming.body_len {
            buf.reserve(incoming.head_len + incoming.body_len - buf.len());
            let due = *due.get_or_insert_with(|| tokio::time::Instant::now() + REQUEST_TIMEOUT);
            let read = tokio::time::timeout_at(due, stream.read_buf(&mut buf)).await;
            if !matches!(read, Ok(Ok(n)) if n > 0) {
                return;
            }
        }
        buf.advance(incoming.head_len);
        let body = buf.split_to(incoming.body_len).freeze();
        let close = incoming.close;
        match answer(&mut stream, &mut out, worker, *incoming, body, &stopping).await {
            Ok(true) if !close && !*stopping.borrow() => {}
            _ => {
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

/// Handles one request and writes its answer; whether the connection may carry another.
async fn answer(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    worker: &Worker,
    incoming: Incoming,
    body: Bytes,
    stopping: &watch::Receiver<bool>,
) -> std::io::Result<bool> {
    let Incoming {
        method,
        path_and_query,
        path_len,
        route,
        headers,
        close,
        ..
    } = incoming;
    let (service, route, answering) = match route {
        Route::Relay { service, route } => (service, route, None),
        Route::Answer { route, answer } => (String::new(), route, Some(answer)),
    };
    let seen = Observation::begin(
        &worker.kit,
        &method,
        &path_and_query[..path_len],
        &headers,
        Some(route.clone()),
    );
    let head_request = method == Method::HEAD;
    // Whether this answer closes the connection: the client asked, or the server is stopping.
    let closing = |stopping: &watch::Receiver<bool>| close || *stopping.borrow();
    if let Some(answering) = answering {
        let made = tokio::select! {
            made = seen.run(answering) => made,
            () = gone(stream) => return Ok(false),
        };
        let made = crate::error::in_json(made, &method, &path_and_query[..path_len]).await;
        let traceparent = seen.finish(made.status(), Some(route));
        let closing = closing(stopping);
        return write_made(stream, out, made, traceparent, closing, head_request).await;
    }
    let request = PeerRequest {
        service,
        method: method.clone(),
        path_and_query,
        route: route.clone(),
        headers,
        body,
    };
    // Boxed: the call is a large future, and each layer `run` wraps it in would otherwise copy
    // it whole (a twentieth of the gateway's time went to those copies).
    let call = seen.run(Box::pin(worker.kit.peers.relay(&request)));
    // A client that goes away while its call is out abandons the call, as nginx and hyper do:
    // the instance's connection is closed, and no answer is waited for that no one will read.
    let relayed = tokio::select! {
        relayed = call => relayed,
        () = gone(stream) => return Ok(false),
    };
    let path = &request.path_and_query[..path_len];
    let closing = closing(stopping);
    match relayed {
        Ok(Relayed {
            status,
            answer: RelayedAnswer::Wire(mut wire),
            ..
        }) => {
            let content_type = wire
                .head
                .fields
                .iter()
                .find(|(n, _)| h1::is(&wire.conn.buf[n.clone()], "content-type"))
                .map(|(_, v)| &wire.conn.buf[v.clone()]);
            if crate::error::needs_json(status, content_type) {
                // As the full server's layer does: an error that is not JSON is made JSON.
                let made =
                    as_json_error(&mut wire, &method, path, worker.kit.peers.timeout()).await;
                let traceparent = seen.finish(status, Some(route));
                return write_made(stream, out, made, traceparent, closing, head_request).await;
            }
            let traceparent = seen.finish(status, Some(route));
            pass_on(stream, out, worker, wire, traceparent, closing).await
        }
        Ok(Relayed {
            status,
            answer: RelayedAnswer::Made { headers, body },
            ..
        }) => {
            let mut made = Response::new(body);
            *made.status_mut() = status;
            *made.headers_mut() = end_to_end(&headers, true);
            let made = crate::error::in_json(made, &method, path).await;
            let traceparent = seen.finish(status, Some(route));
            write_made(stream, out, made, traceparent, closing, head_request).await
        }
        Err(e) => {
            let made = worker.proxy.failed(e).into_response();
            let traceparent = seen.finish(made.status(), Some(route));
            write_made(stream, out, made, traceparent, closing, head_request).await
        }
    }
}

/// Completes when the client closes its connection; never, once it sends more (a pipelined
/// request, read after this answer).
async fn gone(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    // Costs no system call while nothing arrives: tokio knows the socket is not readable.
    match stream.peek(&mut byte).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Writes a `Date` field for now: formatted once a second per thread, as hyper does.
fn date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static NOW: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    NOW.with_borrow_mut(|(at, text)| {
        if *at != second || text.is_empty() {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        field(out, b"date", text.as_bytes());
    });
}

/// Writes a status line.
fn status_line(out: &mut Vec<u8>, status: u16) {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
}

/// Passes an instance's answer on: its head rewritten (the connection's headers dropped, the
/// gateway's `traceparent` in place of the instance's), its body as it is, in as few writes as
/// it arrives in. The upstream connection goes back to the pool once the body is read whole.
async fn pass_on(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    worker: &Worker,
    wire: Wire,
    traceparent: Option<HeaderValue>,
    closing: bool,
) -> std::io::Result<bool> {
    let Wire {
        mut conn,
        head,
        addr,
    } = wire;
    out.clear();
    status_line(out, head.status);
    {
        let buf = &conn.buf;
        let connection = || {
            head.fields
                .iter()
                .filter(|(n, _)| h1::is(&buf[n.clone()], "connection"))
                .map(|(_, v)| &buf[v.clone()])
        };
        for (name, value) in &head.fields {
            let name = &buf[name.clone()];
            let length_of_another_framing = h1::is(name, "content-length")
                && matches!(head.framing, Framing::Chunked | Framing::UntilClose);
            if !(hop_by_hop(name, connection())
                || h1::is(name, "traceparent")
                || length_of_another_framing)
            {
                field(out, name, &buf[value.clone()]);
            }
        }
    }
    if head.framing == Framing::Chunked {
        field(out, b"transfer-encoding", b"chunked");
    }
    // Where the body ends with the connection, downstream as upstream.
    if closing || head.framing == Framing::UntilClose {
        field(out, b"connection", b"close");
    }
    if let Some(traceparent) = traceparent {
        field(out, b"traceparent", traceparent.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    conn.buf.advance(head.len);
    let idle = worker.kit.peers.timeout();
    let complete = match head.framing {
        Framing::Empty => true,
        Framing::Length(n) => {
            let mut left = n;
            loop {
                let take = left.min(conn.buf.len() as u64) as usize;
                out.extend_from_slice(&conn.buf[..take]);
                conn.buf.advance(take);
                left -= take as u64;
                if left == 0 {
                    break true;
                }
                stream.write_all(out).await?;
                out.clear();
                if !more(&mut conn, idle).await {
                    break false;
                }
            }
        }
        Framing::Chunked => {
            let mut chunks = h1::Chunks::default();
            loop {
                match chunks.scan(&conn.buf) {
                    Ok(Some(end)) => {
                        out.extend_from_slice(&conn.buf[..end]);
                        conn.buf.advance(end);
                        break true;
                    }
                    Ok(None) => {
                        out.extend_from_slice(&conn.buf);
                        conn.buf.clear();
                    }
                    Err(_) => break false,
                }
                stream.write_all(out).await?;
                out.clear();
                if !more(&mut conn, idle).await {
                    break false;
                }
            }
        }
        Framing::UntilClose => {
            loop {
                out.extend_from_slice(&conn.buf);
                conn.buf.clear();
                stream.write_all(out).await?;
                out.clear();
                if !more(&mut conn, idle).await {
                    break;
                }
            }
            // The body ended as it should, and so does this connection.
            return Ok(false);
        }
    };
    if !out.is_empty() {
        stream.write_all(out).await?;
        out.clear();
    }
    if complete && head.keep_alive && conn.buf.is_empty() {
        worker.kit.peers.pool().put(addr, conn);
    }
    Ok(complete && !closing)
}

/// Reads more of a body within the idle bound; `false` at its end, or at the peer's failure,
/// which leaves the client's answer cut short (its connection is then closed).
async fn more(conn: &mut h1::Upstream, idle: std::time::Duration) -> bool {
    matches!(tokio::time::timeout(idle, conn.read_more()).await, Ok(Ok(n)) if n > 0)
}

/// An instance's error answer that is not JSON, as the JSON error shape: its text read (up to
/// the limit, within the idle bound) and made its message.
async fn as_json_error(
    wire: &mut Wire,
    method: &Method,
    path: &str,
    idle: std::time::Duration,
) -> Response {
    let conn = &mut wire.conn;
    let head = &wire.head;
    let mut parts = Response::new(()).into_parts().0;
    parts.status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    parts.headers = end_to_end(&head.header_map(&conn.buf), false);
    parts.headers.remove("traceparent");
    conn.buf.advance(head.len);
    let limit = crate::error::ERROR_TEXT_LIMIT;
    let wanted = match head.framing {
        Framing::Empty => 0,
        Framing::Length(n) => (n as usize).min(limit),
        // Chunk sizes would be read as text: read to the end, or the limit, and drop them.
        Framing::Chunked | Framing::UntilClose => limit,
    };
    while conn.buf.len() < wanted {
        if !more(conn, idle).await {
            break;
        }
        if head.framing == Framing::Chunked
            && h1::Chunks::default()
                .scan(&conn.buf)
                .ok()
                .flatten()
                .is_some()
        {
            break;
        }
    }
    let mut text = conn.buf.split_to(conn.buf.len().min(wanted)).to_vec();
    if head.framing == Framing::Chunked {
        text = h1::unchunk(&text);
    }
    // The connection is not used again: what is left of this body may be unread.
    crate::error::as_json_error(parts, method, path, &text)
}

/// Writes an answer made here (an error, an injected fault, a JSON error shape) or read by the
/// pooled client: its length when known, chunked otherwise.
async fn write_made(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    made: Response,
    traceparent: Option<HeaderValue>,
    closing: bool,
    head_request: bool,
) -> std::io::Result<bool> {
    use http_body::Body as _;
    use http_body_util::BodyExt;
    let (parts, mut body) = made.into_parts();
    out.clear();
    status_line(out, parts.status.as_u16());
    for (name, value) in &parts.headers {
        let n = name.as_str().as_bytes();
        // A HEAD's answer keeps the length the GET's would have.
        let length = h1::is(n, "content-length") && !head_request;
        if !(h1::is(n, "traceparent") || length || HOP_BY_HOP.iter().any(|h| h1::is(n, h))) {
            field(out, n, value.as_bytes());
        }
    }
    if !parts.headers.contains_key(axum::http::header::DATE) {
        // As an origin server must (RFC 9110 §6.6.1): this answer was made here.
        date(out);
    }
    let length = body.size_hint().exact();
    let chunked = !head_request && length.is_none();
    let length_said = head_request
        && parts
            .headers
            .contains_key(axum::http::header::CONTENT_LENGTH);
    match length {
        _ if length_said => {}
        Some(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        None if !head_request => field(out, b"transfer-encoding", b"chunked"),
        None => {}
    }
    if closing {
        field(out, b"connection", b"close");
    }
    if let Some(traceparent) = traceparent {
        field(out, b"traceparent", traceparent.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if head_request {
        stream.write_all(out).await?;
        out.clear();
        return Ok(!closing);
    }
    let complete = loop {
        match body.frame().await {
            None => break true,
            Some(Err(_)) => break false,
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if chunked {
                    if data.is_empty() {
                        continue;
                    }
                    let _ = write!(out, "{:x}\r\n", data.len());
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.extend_from_slice(&data);
                }
                stream.write_all(out).await?;
                out.clear();
            }
        }
    };
    if complete && chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    stream.write_all(out).await?;
    out.clear();
    Ok(complete && !closing)
}

/// Serves a connection by hyper's HTTP/1.1 server and `router`, `read` being its first bytes,
/// until it closes, or until `stopping` turns true and its request in flight is answered.
async fn full_server(
    stream: TcpStream,
    read: Bytes,
    router: Router,
    mut stopping: watch::Receiver<bool>,
) {
    let io = hyper_util::rt::TokioIo::new(Rewind {
        read,
        inner: stream,
    });
    let service = hyper_util::service::TowerToHyperService::new(router);
    // The proxy path's bound on a request's head holds here too, or a client could hand a
    // connection over with one whole request and then trickle the next head forever (or, to a
    // service listening beyond loopback, trickle its first). hyper's bound also runs while the
    // connection idles between requests: one left idle for as long is closed, as a keep-alive
    // timeout would.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    // Finishes the request in flight, if any, then closes.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A connection whose first bytes were read already: they are read again first.
struct Rewind {
    read: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    /// Routes every request to `slow`.
    struct ToSlow;

    impl Proxy for ToSlow {
        fn route(&self, _: &Method, path: &str) -> Option<Route> {
            Some(Route::Relay {
                service: "slow".into(),
                route: path.to_string(),
            })
        }

        fn failed(&self, e: PeerError) -> ApiError {
            e.into()
        }
    }

    /// The proxy path in front of `slow_url`, on a free port; the sender stops it.
    async fn serve_to_slow(
        slow_url: String,
    ) -> (
        std::net::SocketAddr,
        watch::Sender<bool>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let kit = testing::kit("front", &[("SLOW_URL", slow_url)]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopping) = watch::channel(false);
        let router = kit.router(Router::new());
        let worker = Worker::new(Arc::new(kit), Arc::new(ToSlow), router, stopping);
        (addr, stop, tokio::spawn(serve(listener, worker)))
    }

    #[tokio::test]
    async fn a_stopping_server_finishes_the_request_in_flight_then_closes() {
        let reached = Arc::new(tokio::sync::Notify::new());
        let arrived = reached.clone();
        let slow = Router::new().fallback(move || {
            arrived.notify_one();
            async {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                "late"
            }
        });
        let slow_url = testing::spawn(&testing::kit("slow", &[]), slow).await;
        let (addr, stop, server) = serve_to_slow(slow_url).await;
        // One connection idle, one with a request in flight.
        let idle = TcpStream::connect(addr).await.unwrap();
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"GET /x HTTP/1.1\r\nhost: f\r\n\r\n")
            .await
            .unwrap();
        // Once the request is in flight: it has reached the instance.
        reached.notified().await;
        stop.send(true).unwrap();
        let mut answer = Vec::new();
        busy.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nlate"), "{answer}");
        // The server is done once both connections are: the idle one was closed.
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
        let mut rest = Vec::new();
        let mut idle = idle;
        assert_eq!(
            idle.read_to_end(&mut rest).await.unwrap(),
            0,
            "closed, unanswered"
        );
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer accepting"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_begins_a_request_and_stalls_is_closed_after_the_timeout() {
        let (addr, _stop, _server) = serve_to_slow(testing::dead_url()).await;
        // Half a head; and a whole head whose body never comes.
        for begun in [
            &b"GET /x HTTP/1.1\r\nhost: f\r\n"[..],
            b"POST /x HTTP/1.1\r\ncontent-length: 9\r\n\r\nabc",
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(begun).await.unwrap();
            let rest = closed_by_the_timeout(&mut client).await;
            assert!(rest.is_empty(), "closed without an answer: {rest:?}");
        }
        // One that keeps its requests whole is never timed out, however long it idles between.
        let mut client = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(REQUEST_TIMEOUT * 2).await;
        client
            .write_all(b"GET /x HTTP/1.1\r\nhost: f\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 503 "),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_handed_to_the_full_server_is_closed_when_a_head_stalls() {
        let (addr, _stop, _server) = serve_to_slow(testing::dead_url()).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        // A chunked body is the full server's: the connection is handed over with it.
        client
            .write_all(
                b"POST /x HTTP/1.1\r\nhost: f\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            )
            .await
            .unwrap();
        // The router has no routes: a 404, read to its end.
        let mut first = Vec::new();
        while !first.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            client.read_exact(&mut byte).await.unwrap();
            first.push(byte[0]);
        }
        let first = String::from_utf8_lossy(&first);
        assert!(first.starts_with("HTTP/1.1 404 "), "{first}");
        let length: usize = first
            .split("content-length: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .expect("a length");
        client.read_exact(&mut vec![0u8; length]).await.unwrap();
        client.write_all(b"GET /y HTTP/1.1\r\nhost:").await.unwrap();
        let rest = closed_by_the_timeout(&mut client).await;
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty() || rest.starts_with("HTTP/1.1 408 "),
            "closed, at most with a 408: {rest}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_is_no_gateway_closes_a_connection_whose_head_stalls() {
        let kit = testing::kit("plain", &[]);
        let app = Router::new().route("/x", axum::routing::get(|| async { "x" }));
        let url = testing::spawn(&kit, app).await;
        let addr = url.trim_start_matches("http://").to_string();
        // A whole request is answered, and the connection kept.
        let mut client = TcpStream::connect(&addr).await.unwrap();
        client
            .write_all(b"GET /x HTTP/1.1\r\nhost: f\r\n\r\n")
            .await
            .unwrap();
        let mut answer = vec![0u8; 12];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
        // A first head that never ends, on a connection of its own.
        let mut stalled = TcpStream::connect(&addr).await.unwrap();
        stalled
            .write_all(b"GET /x HTTP/1.1\r\nhost:")
            .await
            .unwrap();
        let rest = closed_by_the_timeout(&mut stalled).await;
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty() || rest.starts_with("HTTP/1.1 408 "),
            "closed, at most with a 408: {rest}"
        );
    }

    /// Reads `client` to its end, which must come, and not before `REQUEST_TIMEOUT`; what was
    /// read. For paused time.
    async fn closed_by_the_timeout(client: &mut TcpStream) -> Vec<u8> {
        let started = tokio::time::Instant::now();
        let mut rest = Vec::new();
        tokio::time::timeout(REQUEST_TIMEOUT * 3, client.read_to_end(&mut rest))
            .await
            .expect("the connection is closed")
            .unwrap();
        assert!(
            started.elapsed() >= REQUEST_TIMEOUT,
            "not before the timeout"
        );
        rest
    }

    #[test]
    fn the_connections_own_headers_are_told_from_the_messages() {
        let connection = [&b"X-Private, close"[..]];
        for name in [
            "Connection",
            "te",
            "Transfer-Encoding",
            "x-private",
            "KEEP-ALIVE",
        ] {
            assert!(
                hop_by_hop(name.as_bytes(), connection.iter().copied()),
                "{name}"
            );
        }
        for name in ["x-custom", "traceparent", "content-type", "x-privat"] {
            assert!(
                !hop_by_hop(name.as_bytes(), connection.iter().copied()),
                "{name}"
            );
        }
    }
}
