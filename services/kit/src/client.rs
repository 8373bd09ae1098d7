//! Calls to other services: one pooled HTTP client, discovery by name, the least loaded healthy
//! instance (ejecting ones that keep failing), one retry on another instance where it is safe,
//! one timeout over the whole call, trace context passed on, and a client span for each attempt.

use crate::balance::{Balancer, Outcome};
use crate::discovery::{Discovery, DiscoveryError, Endpoint};
use crate::error::ApiError;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Status, TraceContextExt};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A request to another service, named by service, not address.
#[derive(Debug, Clone)]
pub struct PeerRequest {
    pub service: String,
    pub method: Method,
    /// Path and query, sent as is: `/users/1?x=y`.
    pub path_and_query: String,
    /// The route template, for the span name: `/users/{id}`.
    pub route: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl PeerRequest {
    pub fn get(service: &str, path_and_query: impl Into<String>, route: &str) -> Self {
        Self {
            service: service.to_string(),
            method: Method::GET,
            path_and_query: path_and_query.into(),
            route: route.to_string(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }
}

/// A whole answer from a peer, body read in full within the call's timeout.
#[derive(Debug, Clone)]
pub struct PeerResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub instance: String,
}

impl PeerResponse {
    pub fn json(&self) -> Result<Value, PeerError> {
        serde_json::from_slice(&self.body).map_err(|e| PeerError::BadAnswer {
            service: self.instance.clone(),
            message: format!("answered {} with a body that is not JSON: {e}", self.status),
        })
    }
}

/// An answer whose body is passed on as it arrives, for a proxy: a large or slow body is never
/// held whole in memory.
#[derive(Debug)]
pub struct PeerStream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Ends with an error if the peer stops sending for longer than the call's timeout.
    pub body: axum::body::Body,
    pub instance: String,
}

/// What an attempt got back: a whole body for `send`, an open one for `forward`.
struct Fetched {
    status: StatusCode,
    headers: HeaderMap,
    body: Fetch,
    instance: String,
}

enum Fetch {
    Whole(Bytes),
    Open(hyper::body::Incoming),
    /// The answer's head read off an upstream connection, its body still to come.
    Wire(Wire),
}

/// An answer on its way through a proxy: its head parsed on the connection it came on, the body
/// after it in the connection's buffer and still to be read.
#[derive(Debug)]
pub struct Wire {
    pub conn: crate::h1::Upstream,
    pub head: crate::h1::AnswerHead,
    /// Where the connection goes back to once the body is read whole.
    pub addr: std::net::SocketAddr,
}

/// A relayed call's answer (`Peers::relay`).
#[derive(Debug)]
pub struct Relayed {
    pub status: StatusCode,
    pub instance: String,
    pub answer: RelayedAnswer,
}

#[derive(Debug)]
pub enum RelayedAnswer {
    /// From the instance, to be passed on as it is.
    Wire(Wire),
    /// Made here: an answer `msctl fault` injected, or one read by the pooled client from a peer
    /// not addressed by IP.
    Made {
        headers: HeaderMap,
        body: axum::body::Body,
    },
}

/// How a call is sent and its answer read.
enum How {
    /// The answer's body read whole.
    Whole,
    /// The answer's body passed on as it arrives; the request's, if given, streamed.
    Open(Option<axum::body::Body>),
    /// On a kept connection of this thread's, the answer's head read and its body left on the
    /// wire for a proxy.
    Wire,
}

impl Fetched {
    fn whole(self) -> PeerResponse {
        let body = match self.body {
            Fetch::Whole(bytes) => bytes,
            // `send` always reads the body whole; an open one cannot reach here.
            Fetch::Open(_) | Fetch::Wire(_) => Bytes::new(),
        };
        PeerResponse {
            status: self.status,
            headers: self.headers,
            body,
            instance: self.instance,
        }
    }

    fn relayed(self, idle: Duration) -> Relayed {
        let answer = match self.body {
            Fetch::Wire(wire) => RelayedAnswer::Wire(wire),
            Fetch::Whole(bytes) => RelayedAnswer::Made {
                headers: self.headers,
                body: axum::body::Body::from(bytes),
            },
            Fetch::Open(incoming) => RelayedAnswer::Made {
                headers: self.headers,
                body: axum::body::Body::new(IdleBounded::new(incoming, idle)),
            },
        };
        Relayed {
            status: self.status,
            instance: self.instance,
            answer,
        }
    }

    fn streamed(self, idle: Duration) -> PeerStream {
        let body = match self.body {
            Fetch::Whole(bytes) => axum::body::Body::from(bytes),
            Fetch::Open(incoming) => axum::body::Body::new(IdleBounded::new(incoming, idle)),
            // `forward` never reads on the wire.
            Fetch::Wire(_) => axum::body::Body::empty(),
        };
        PeerStream {
            status: self.status,
            headers: self.headers,
            body,
            instance: self.instance,
        }
    }
}

/// A body passed on as it arrives, ended with an error when its next frame takes longer than
/// `idle` to come: a peer that stalls mid-body must not hold the caller's connection open for
/// ever. The timer is armed only while a frame is awaited, so a body already in hand (most
/// answers, by the time their head is read) costs no timer at all.
struct IdleBounded {
    inner: hyper::body::Incoming,
    idle: Duration,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl IdleBounded {
    fn new(inner: hyper::body::Incoming, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
        }
    }
}

impl http_body::Body for IdleBounded {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(
                    frame.map(|f| {
                        f.map_err(|e| std::io::Error::other(crate::error::root_cause(&e)))
                    }),
                )
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timer = None;
                        Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("the peer sent nothing for {} ms", idle.as_millis()),
                        ))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("`{service}` is unreachable at {url}: {message}")]
    Unreachable {
        service: String,
        url: String,
        message: String,
    },
    #[error("`{service}` did not answer within {} ms", after.as_millis())]
    Timeout { service: String, after: Duration },
    #[error("`{service}` gave a bad answer: {message}")]
    BadAnswer { service: String, message: String },
}

impl PeerError {
    /// The status a gateway or caller answers with when this call failed.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Discovery(_) | Self::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BadAnswer { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The OpenTelemetry `error.type` of the failure.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Discovery(DiscoveryError::Unknown { .. }) => "unknown_service",
            Self::Discovery(_) => "no_instance",
            Self::Unreachable { .. } => "connection_failed",
            Self::Timeout { .. } => "timeout",
            Self::BadAnswer { .. } => "bad_answer",
        }
    }
}

impl From<PeerError> for ApiError {
    fn from(e: PeerError) -> Self {
        let status = e.status();
        ApiError::new(status, crate::error::code_for(status), e.to_string())
    }
}

/// The calls a service makes to others. Cheap to clone: all clones share the connection pools
/// and the balancer's bookkeeping.
#[derive(Debug, Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

/// The pooled HTTP/1.1 client, on hyper directly: the calls are to loopback addresses by IP,
/// so none of a general-purpose client's URL parsing, redirects or proxies is wanted.
type Http = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    axum::body::Body,
>;

#[derive(Debug)]
struct Inner {
    /// One pool per thread, as Envoy keeps one per worker: a pooled connection is driven by a
    /// task on the thread that opened it, so a request from another thread would have to wake
    /// that thread for every call.
    http: thread_local::ThreadLocal<Http>,
    /// The connections calls to peers addressed by IP go on, also one pool per thread: HTTP/1.1
    /// written and read by the kit (`h1`), without the pooled client's task and channel per
    /// connection.
    wire: thread_local::ThreadLocal<crate::h1::Pool>,
    discovery: Discovery,
    timeout: Duration,
    balancer: Mutex<Balancer>,
    faults: crate::fault::FaultFile,
}

impl Peers {
    pub fn new(discovery: Discovery, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                http: thread_local::ThreadLocal::new(),
                wire: thread_local::ThreadLocal::new(),
                timeout,
                balancer: Mutex::new(Balancer::default()),
                faults: crate::fault::FaultFile::beside(discovery.registry_path()),
                discovery,
            }),
        }
    }

    pub fn discovery(&self) -> &Discovery {
        &self.inner.discovery
    }

    /// This thread's connection pool.
    fn http(&self) -> &Http {
        self.inner.http.get_or(|| {
            let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
            // Requests are small and answered at once: waiting to fill a segment only adds
            // latency.
            connector.set_nodelay(true);
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build(connector)
        })
    }

    /// This thread's kept connections, to which a proxy gives back one whose answer it has
    /// passed on whole.
    pub(crate) fn pool(&self) -> &crate::h1::Pool {
        self.inner.wire.get_or(crate::h1::Pool::default)
    }

    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Sends `req` to the least loaded healthy instance of its service, within the timeout, in a
    /// client span that is a child of the current span (the request's server span, or a
    /// handler's own). A call that may be sent again is retried once, on another instance where
    /// there is one, within the same timeout: one that never reached a service (the connection
    /// failed), and an idempotent one without a body (GET, HEAD, PUT, DELETE, OPTIONS) that got no
    /// answer or a 502, 503 or 504. The retry's span carries `http.request.resend_count = 1`.
    pub async fn send(&self, req: PeerRequest) -> Result<PeerResponse, PeerError> {
        self.call(&req, How::Whole).await.map(Fetched::whole)
    }

    /// As `send`, for a proxy: the answer's body is passed on as it arrives, and the request's
    /// body may be a stream (`stream`, which replaces `req.body`). A streamed body can be sent
    /// once only, so such a call is never sent again. The client span and the timeout cover
    /// the call up to the answer's head; after that, the body ends with an error if the peer
    /// stops sending for longer than the timeout.
    pub async fn forward(
        &self,
        req: PeerRequest,
        stream: Option<axum::body::Body>,
    ) -> Result<PeerStream, PeerError> {
        let idle = self.inner.timeout;
        self.call(&req, How::Open(stream))
            .await
            .map(|answer| answer.streamed(idle))
    }

    /// As `send`, for a proxy that writes HTTP/1.1 itself: the answer's head is read on this
    /// thread's connection to the instance and its body left on the wire, to be passed on as it
    /// is (`Relayed`); the proxy gives the connection back to `pool()` once it has. The
    /// request's headers are sent as they are, with the trace context and the deadline added. A
    /// peer known by name, not IP, is called with the pooled client instead, its answer `Made`.
    pub async fn relay(&self, req: &PeerRequest) -> Result<Relayed, PeerError> {
        let idle = self.inner.timeout;
        self.call(req, How::Wire)
            .await
            .map(|answer| answer.relayed(idle))
    }

    async fn call(&self, req: &PeerRequest, how: How) -> Result<Fetched, PeerError> {
        // The call's own timeout, or the request's remaining budget if that is shorter.
        let started = Instant::now();
        let deadline = crate::deadline::bound(started + self.inner.timeout);
        // A timeout names the budget the call had, which a caller's deadline may have shortened.
        let budget = |result: Result<Fetched, PeerError>| match result {
            Err(PeerError::Timeout { service, .. }) => Err(PeerError::Timeout {
                service,
                after: deadline - started,
            }),
            other => other,
        };
        let (streamed, second) = match &how {
            How::Whole => (false, How::Whole),
            How::Open(stream) => (stream.is_some(), How::Open(None)),
            How::Wire => (false, How::Wire),
        };
        let (first, instance) = self.attempt(req, how, 0, None, deadline).await;
        let again = !streamed
            && match &first {
                Err(PeerError::Unreachable { .. }) => true,
                Err(PeerError::BadAnswer { .. }) => may_resend(req),
                Ok(answer) => may_resend(req) && matches!(answer.status.as_u16(), 502..=504),
                Err(PeerError::Timeout { .. } | PeerError::Discovery(_)) => false,
            };
        if !again || Instant::now() >= deadline {
            return budget(first);
        }
        budget(
            self.attempt(req, second, 1, instance.as_deref(), deadline)
                .await
                .0,
        )
    }

    /// One attempt, in its own client span; also names the instance it went to.
    async fn attempt(
        &self,
        req: &PeerRequest,
        how: How,
        resend: u32,
        avoid: Option<&str>,
        deadline: Instant,
    ) -> (Result<Fetched, PeerError>, Option<String>) {
        // In a trace that is not sampled no span is made; the request's context goes on.
        let span = if crate::sampling::in_unsampled_trace() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "call",
                otel.name = %format_args!("{} {}", req.method, req.route),
                otel.kind = "client",
                http.request.method = %req.method,
                peer.service = %req.service,
            )
        };
        let cx = span.context();
        let own = cx.span().span_context().is_valid();
        // With tracing off there is no client span: the current context (the caller's) goes on.
        let cx = if own {
            cx
        } else {
            opentelemetry::Context::current()
        };
        if own && resend > 0 {
            cx.span().set_attribute(KeyValue::new(
                "http.request.resend_count",
                i64::from(resend),
            ));
        }
        let (endpoint, peers) = match self.choose(&req.service, avoid) {
            Ok(chosen) => chosen,
            Err(e) => {
                let e = PeerError::from(e);
                if own {
                    cx.span()
                        .set_attribute(KeyValue::new("error.type", e.error_type()));
                    cx.span().set_status(Status::error(e.to_string()));
                }
                return (Err(e), None);
            }
        };
        let mut in_flight = InFlight {
            peers: self,
            instance: &endpoint.instance,
            done: false,
        };
        // Discovery's look at the folder, just made in `choose`, says whether the fault file
        // may have changed too.
        let folder = self.inner.discovery.folder_version();
        let injected = match self
            .inner
            .faults
            .for_call(&req.service, &endpoint.instance, folder)
        {
            Some(fault) => self.faulted(req, &endpoint, &cx, deadline, fault).await,
            None => None,
        };
        let result = match injected {
            Some(answered_here) => answered_here,
            None => match (how, endpoint.socket_addr()) {
                (How::Open(stream), _) => {
                    self.exchange(req, stream, false, &endpoint, &cx, deadline)
                        .await
                }
                (how, Some(addr)) => {
                    let whole = matches!(how, How::Whole);
                    self.exchange_wire(req, addr, whole, &endpoint, &cx, deadline)
                        .await
                }
                (how, None) => {
                    let whole = matches!(how, How::Whole);
                    self.exchange(req, None, whole, &endpoint, &cx, deadline)
                        .await
                }
            },
        };
        let outcome = match &result {
            Ok(answer) if answer.status.is_server_error() => Outcome::Failed,
            Ok(_) => Outcome::Answered,
            Err(_) => Outcome::Failed,
        };
        in_flight.done = true;
        drop(in_flight);
        self.lock_balancer()
            .finish(&endpoint.instance, outcome, peers, Instant::now());
        if own {
            let otel = cx.span();
            match &result {
                Ok(answer) => {
                    let code = answer.status.as_u16();
                    otel.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
                    if code >= 400 {
                        otel.set_attribute(KeyValue::new("error.type", code.to_string()));
                        otel.set_status(Status::error(""));
                    }
                }
                Err(e) => {
                    otel.set_attribute(KeyValue::new("error.type", e.error_type()));
                    otel.set_status(Status::error(e.to_string()));
                }
            }
        }
        (result, Some(endpoint.instance))
    }

    /// A call under `msctl fault`: delayed, within the call's deadline, then with the fault's
    /// probability answered here with its status instead of sent. Noted as a span event.
    /// `None` when the call is to be sent after all.
    async fn faulted(
        &self,
        req: &PeerRequest,
        endpoint: &Endpoint,
        cx: &opentelemetry::Context,
        deadline: Instant,
        fault: msctl_contract::fault::Fault,
    ) -> Option<Result<Fetched, PeerError>> {
        let abort = fault.error_rate > 0.0 && rand::random::<f64>() < fault.error_rate;
        cx.span().add_event(
            "msctl.fault",
            vec![
                KeyValue::new("msctl.fault.target", fault.target.clone()),
                KeyValue::new("msctl.fault.delay_ms", fault.delay_ms as i64),
                KeyValue::new("msctl.fault.aborted", abort),
            ],
        );
        if fault.delay_ms > 0 {
            let until = Instant::now() + Duration::from_millis(fault.delay_ms);
            tokio::time::sleep_until(until.min(deadline)).await;
            if until > deadline {
                return Some(Err(PeerError::Timeout {
                    service: req.service.clone(),
                    after: self.inner.timeout,
                }));
            }
        }
        if !abort {
            return None;
        }
        let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let body = serde_json::json!({"error": {
            "code": "fault_injected",
            "message": format!("msctl fault on `{}`: answered {} without sending the call", fault.target, status.as_u16()),
        }});
        Some(Ok(Fetched {
            status,
            headers: HeaderMap::new(),
            body: Fetch::Whole(Bytes::from(body.to_string())),
            instance: endpoint.instance.clone(),
        }))
    }

    /// The instance to call, and how many healthy instances the service has.
    fn choose(
        &self,
        service: &str,
        avoid: Option<&str>,
    ) -> Result<(Endpoint, usize), DiscoveryError> {
        let healthy = self.inner.discovery.healthy(service)?;
        let mut balancer = self.lock_balancer();
        let Some(i) = balancer.pick(&healthy, avoid, Instant::now()) else {
            return Err(DiscoveryError::NoHealthy {
                service: service.to_string(),
                detail: "no instances".into(),
            });
        };
        let peers = healthy.len();
        let endpoint = healthy[i].clone();
        balancer.start(&endpoint.instance);
        Ok((endpoint, peers))
    }

    fn lock_balancer(&self) -> std::sync::MutexGuard<'_, Balancer> {
        // The bookkeeping stays usable even if a thread panicked while holding it.
        self.inner
            .balancer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    async fn exchange(
        &self,
        req: &PeerRequest,
        stream: Option<axum::body::Body>,
        read_whole: bool,
        endpoint: &Endpoint,
        cx: &opentelemetry::Context,
        deadline: Instant,
    ) -> Result<Fetched, PeerError> {
        let url = format!("{}{}", endpoint.base_url, req.path_and_query);
        let uri = axum::http::Uri::try_from(url.as_str()).map_err(|e| PeerError::Unreachable {
            service: req.service.clone(),
            url: url.clone(),
            message: format!("not a valid URL: {e}"),
        })?;
        let otel = cx.span();
        if otel.is_recording() {
            if let Some(host) = uri.host() {
                otel.set_attribute(KeyValue::new("server.address", host.to_string()));
            }
            if let Some(port) = uri.port_u16() {
                otel.set_attribute(KeyValue::new("server.port", i64::from(port)));
            }
            otel.set_attribute(KeyValue::new("url.full", url.clone()));
        }
        let mut request = axum::http::Request::new(
            stream.unwrap_or_else(|| axum::body::Body::from(req.body.clone())),
        );
        *request.method_mut() = req.method.clone();
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.clone_from(&req.headers);
        crate::trace_context::inject(cx, headers);
        crate::deadline::inject(deadline, headers);
        let call = async {
            let response = self
                .http()
                .request(request)
                .await
                .map_err(|e| self.classify(&req.service, &url, &e, e.is_connect()))?;
            let (parts, incoming) = response.into_parts();
            let body = if read_whole {
                use http_body_util::BodyExt;
                Fetch::Whole(
                    incoming
                        .collect()
                        .await
                        .map_err(|e| self.classify(&req.service, &url, &e, false))?
                        .to_bytes(),
                )
            } else {
                Fetch::Open(incoming)
            };
            Ok(Fetched {
                status: parts.status,
                headers: parts.headers,
                body,
                instance: endpoint.instance.clone(),
            })
        };
        match tokio::time::timeout_at(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(PeerError::Timeout {
                service: req.service.clone(),
                after: self.inner.timeout,
            }),
        }
    }

    /// `exchange` on a kept connection of this thread's: the request written as HTTP/1.1 here,
    /// the answer's head parsed, and its body read whole (`read_whole`, the connection then kept
    /// again) or left on the connection for a proxy.
    async fn exchange_wire(
        &self,
        req: &PeerRequest,
        addr: std::net::SocketAddr,
        read_whole: bool,
        endpoint: &Endpoint,
        cx: &opentelemetry::Context,
        deadline: Instant,
    ) -> Result<Fetched, PeerError> {
        let url = || format!("{}{}", endpoint.base_url, req.path_and_query);
        let otel = cx.span();
        if otel.is_recording() {
            otel.set_attribute(KeyValue::new("server.address", addr.ip().to_string()));
            otel.set_attribute(KeyValue::new("server.port", i64::from(addr.port())));
            otel.set_attribute(KeyValue::new("url.full", url()));
        }
        let request = wire_request(req, endpoint, cx, deadline);
        let head_request = req.method == Method::HEAD;
        let pool = self.pool();
        let bad_answer = |e: crate::h1::WireError| {
            let mut message = e.to_string();
            if matches!(e, crate::h1::WireError::NotHttp(_)) {
                message = format!(
                    "it does not speak HTTP/1.1 at {} ({message})",
                    endpoint.base_url
                );
            }
            PeerError::BadAnswer {
                service: req.service.clone(),
                message,
            }
        };
        let call = async {
            // A kept connection the peer closed just now fails before any answer; then, where
            // the call may be sent again, it goes once more on a new one.
            let mut fresh_allowed = may_resend(req);
            loop {
                let mut conn = match pool.take(addr) {
                    Some(conn) => conn,
                    None => crate::h1::Upstream::connect(addr).await.map_err(|e| {
                        PeerError::Unreachable {
                            service: req.service.clone(),
                            url: url(),
                            message: e.to_string(),
                        }
                    })?,
                };
                match conn.exchange(&request, head_request).await {
                    Ok(head) => {
                        let status =
                            StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
                        if !read_whole {
                            return Ok(Fetched {
                                status,
                                headers: HeaderMap::new(),
                                body: Fetch::Wire(Wire { conn, head, addr }),
                                instance: endpoint.instance.clone(),
                            });
                        }
                        let headers = head.header_map(&conn.buf);
                        let body = conn.read_whole(&head).await.map_err(bad_answer)?;
                        if head.keep_alive && conn.buf.is_empty() {
                            pool.put(addr, conn);
                        }
                        return Ok(Fetched {
                            status,
                            headers,
                            body: Fetch::Whole(body),
                            instance: endpoint.instance.clone(),
                        });
                    }
                    Err(crate::h1::WireError::Closed | crate::h1::WireError::Io(_))
                        if conn.reused && conn.buf.is_empty() && fresh_allowed =>
                    {
                        fresh_allowed = false;
                    }
                    Err(e) => return Err(bad_answer(e)),
                }
            }
        };
        match tokio::time::timeout_at(deadline, Box::pin(call)).await {
            Ok(result) => result,
            Err(_) => Err(PeerError::Timeout {
                service: req.service.clone(),
                after: self.inner.timeout,
            }),
        }
    }

    /// A call that failed: `connect` when it never reached the peer, so that it may be sent
    /// again anywhere.
    fn classify(
        &self,
        service: &str,
        url: &str,
        e: &(dyn std::error::Error + 'static),
        connect: bool,
    ) -> PeerError {
        if connect {
            PeerError::Unreachable {
                service: service.to_string(),
                url: url.to_string(),
                message: crate::error::root_cause(e),
            }
        } else {
            let mut message = crate::error::root_cause(e);
            if not_http(e) {
                // A port that speaks another protocol (a broker, a database) behind a service
                // name: hyper's words alone do not say so.
                let at = url.split('/').take(3).collect::<Vec<_>>().join("/");
                message = format!("it does not speak HTTP/1.1 at {at} ({message})");
            }
            PeerError::BadAnswer {
                service: service.to_string(),
                message,
            }
        }
    }
}

/// `req` as HTTP/1.1 bytes for `addr`: its headers, the trace context and the deadline, its
/// length and its body.
fn wire_request(
    req: &PeerRequest,
    endpoint: &Endpoint,
    cx: &opentelemetry::Context,
    deadline: Instant,
) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(256 + req.body.len());
    let field = crate::h1::write_field;
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let host = endpoint.base_url.trim_start_matches("http://");
    field(&mut out, b"host", host.as_bytes());
    for (name, value) in &req.headers {
        let ours = matches!(
            name.as_str(),
            "host" | "content-length" | "traceparent" | "tracestate" | crate::deadline::HEADER
        );
        if !ours && !crate::h1::is(name.as_str().as_bytes(), "transfer-encoding") {
            field(&mut out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    // As `trace_context::inject` writes them, without a header map in between.
    let context = crate::trace_context::RequestContext::of(cx);
    if let Some(trace) = context.trace {
        field(&mut out, b"traceparent", &trace.header_bytes());
        if let Some(state) = context.tracestate {
            field(&mut out, b"tracestate", state.as_bytes());
        }
    }
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    let _ = write!(out, "{}: {left}\r\n", crate::deadline::HEADER);
    if !req.body.is_empty() || [Method::POST, Method::PUT, Method::PATCH].contains(&req.method) {
        let _ = write!(out, "content-length: {}\r\n", req.body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&req.body);
    out
}

/// Whether the peer's bytes were not HTTP: an answer that does not parse, or bytes sent before
/// any request (as a NATS server greets a new connection).
fn not_http(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_parse() || h.to_string().contains("unexpected message"))
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Whether a call may be sent a second time after it may have reached a service: an idempotent
/// method with no body.
fn may_resend(req: &PeerRequest) -> bool {
    use axum::http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
    ]
    .contains(&req.method)
        && req.body.is_empty()
}

/// A call in flight: if its caller drops it half-way, it stops counting as outstanding.
struct InFlight<'a> {
    peers: &'a Peers,
    instance: &'a str,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.peers.lock_balancer().abandon(self.instance);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{self, InstanceState, Registry, ServiceEntry, instance};
    use crate::testing::{self, attribute, capture_spans};
    use axum::Router;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn port(url: &str) -> u16 {
        url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Peers whose registry lists `urls` as the healthy instances `echo-1`, `echo-2`…
    fn peers_of(dir: &std::path::Path, urls: &[String]) -> Peers {
        let path = dir.join("registry.json");
        let mut reg = Registry {
            version: 1,
            ..Default::default()
        };
        let instances = urls
            .iter()
            .enumerate()
            .map(|(i, u)| instance(&format!("echo-{}", i + 1), port(u), InstanceState::Healthy))
            .collect();
        reg.services.insert(
            "echo".into(),
            ServiceEntry {
                instances,
                build_failed: None,
            },
        );
        registry::write(&path, &reg).unwrap();
        Peers::new(Discovery::new(Some(path), []), Duration::from_secs(2))
    }

    /// A server answering `status` to everything, counting what it gets.
    async fn server(status: u16) -> (String, Arc<AtomicU32>) {
        let hits = Arc::new(AtomicU32::new(0));
        let counted = hits.clone();
        let app = Router::new().fallback(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { StatusCode::from_u16(status).unwrap() }
        });
        let kit = testing::kit("echo", &[]);
        (testing::spawn(&kit, app).await, hits)
    }

    #[tokio::test]
    async fn a_peer_that_does_not_speak_http_is_named_as_such() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // One greets every connection before any request, as a NATS server does; the other
        // answers a request with something that is not HTTP.
        let dir = tempfile::tempdir().unwrap();
        for greets in [true, false] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        if greets {
                            let _ = conn.write_all(b"INFO {\"server_id\":\"x\"}\r\n").await;
                        } else {
                            let mut buf = [0u8; 1024];
                            let _ = conn.read(&mut buf).await;
                            let _ = conn.write_all(b"HELLO THERE\r\n\r\n").await;
                        }
                        let mut buf = [0u8; 1024];
                        while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                    });
                }
            });
            let peers = peers_of(dir.path(), std::slice::from_ref(&url));
            let err = peers
                .send(PeerRequest::get("echo", "/x", "/x"))
                .await
                .unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{err}");
            let said = err.to_string();
            assert!(
                said.starts_with(&format!(
                    "`echo` gave a bad answer: it does not speak HTTP/1.1 at {url} ("
                )),
                "{said}"
            );
        }
    }

    #[tokio::test]
    async fn a_call_to_a_dead_instance_is_retried_once_on_a_live_one() {
        let spans = capture_spans();
        let dir = tempfile::tempdir().unwrap();
        let (live, hits) = server(200).await;
        let peers = peers_of(dir.path(), &[testing::dead_url(), live]);
        // Each request tries the least loaded instance; whichever it meets first, all succeed.
        for _ in 0..4 {
            let answer = peers
                .send(PeerRequest::get("echo", "/x", "/x"))
                .await
                .unwrap();
            assert_eq!(answer.status, 200);
            assert_eq!(answer.instance, "echo-2");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 4);
        let all = spans.finished();
        let resent: Vec<_> = all
            .iter()
            .filter(|s| attribute(s, "http.request.resend_count") == Some(1i64.into()))
            .collect();
        assert!(!resent.is_empty(), "some first tries met the dead instance");
        assert!(
            resent
                .iter()
                .all(|s| attribute(s, "http.response.status_code") == Some(200i64.into()))
        );
        // A POST is retried too when it never reached a service: the connection failed.
        let post = PeerRequest {
            method: Method::POST,
            body: Bytes::from_static(b"{}"),
            ..PeerRequest::get("echo", "/x", "/x")
        };
        for _ in 0..2 {
            assert_eq!(peers.send(post.clone()).await.unwrap().status, 200);
        }
    }

    #[tokio::test]
    async fn a_503_is_retried_for_a_get_but_never_for_a_post() {
        let dir = tempfile::tempdir().unwrap();
        let (failing, failed) = server(503).await;
        let (live, served) = server(200).await;
        let peers = peers_of(dir.path(), &[failing, live]);
        for _ in 0..4 {
            let answer = peers
                .send(PeerRequest::get("echo", "/x", "/x"))
                .await
                .unwrap();
            assert_eq!(
                answer.status, 200,
                "a GET that met the 503 went on to echo-2"
            );
        }
        assert_eq!(served.load(Ordering::SeqCst), 4);
        let before = failed.load(Ordering::SeqCst);
        let post = PeerRequest {
            method: Method::POST,
            body: Bytes::from_static(b"{}"),
            ..PeerRequest::get("echo", "/x", "/x")
        };
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(peers.send(post.clone()).await.unwrap().status.as_u16());
        }
        let reached_failing = failed.load(Ordering::SeqCst) - before;
        assert_eq!(
            statuses.iter().filter(|s| **s == 503).count() as u32,
            reached_failing,
            "every POST that reached the failing instance got its 503, unretried: {statuses:?}"
        );
    }

    #[tokio::test]
    async fn an_instance_failing_again_and_again_leaves_the_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (failing, failed) = server(500).await;
        let (live, _) = server(200).await;
        let (other, _) = server(200).await;
        let peers = peers_of(dir.path(), &[failing, live, other]);
        let post = PeerRequest {
            method: Method::POST,
            ..PeerRequest::get("echo", "/x", "/x")
        };
        for _ in 0..60 {
            let _ = peers.send(post.clone()).await;
        }
        assert_eq!(
            failed.load(Ordering::SeqCst),
            crate::balance::EJECT_AFTER,
            "after five 500s in a row it gets no more calls"
        );
        assert!(peers.lock_balancer().is_ejected("echo-1"));
    }
}
