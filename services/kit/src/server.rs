//! Serving: the `Kit` a service's `main` builds, the layers every service gets, and graceful shutdown.

use crate::client::Peers;
use crate::discovery::Discovery;
use crate::env::ServiceEnv;
use crate::telemetry::{Mode, Telemetry};
use crate::trace_context::{self, RequestContext};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Status, TraceContextExt, TraceId, TraceState};
use serde_json::json;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How long a stopping service may spend writing out its last spans.
const FLUSH_ON_EXIT: Duration = Duration::from_secs(2);

/// Requests larger than this are refused with 413 before a handler sees them.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Set by a handler on its response to name its route more precisely than the router can: the
/// gateway answers `/{service}/{*rest}` and names it `/users/{*rest}`. Spans use this name.
#[derive(Debug, Clone)]
pub struct RouteName(pub String);

/// What one service is: its environment, its peers and its telemetry.
#[derive(Debug, Clone)]
pub struct Kit {
    pub env: ServiceEnv,
    pub peers: Peers,
    pub telemetry: Telemetry,
    /// `Off` passes a caller's trace context on without spans of its own.
    pub trace_mode: Mode,
    pub version: &'static str,
    pub body_limit: usize,
    started: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("bad environment: {0}")]
    Env(String),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

impl Kit {
    /// Reads the environment contract, installs telemetry (the process's `tracing` subscriber
    /// and OTLP exporters) and sets up discovery. `name` is used when `MSCTL_SERVICE` is unset.
    /// Must run inside a Tokio runtime.
    pub fn from_env(name: &str, version: &'static str) -> Result<Self, KitError> {
        let env = ServiceEnv::from_process(name).map_err(KitError::Env)?;
        let mode = Mode::from_lookup(|k| std::env::var(k).ok());
        let telemetry = Telemetry::install(&env.service, &env.instance, mode);
        let mut kit = Self::new(env, std::env::vars(), version);
        kit.telemetry = telemetry;
        kit.trace_mode = mode;
        Ok(kit)
    }

    /// Builds a kit from explicit parts, for tests and embedding. Spans are made by whatever
    /// `tracing` subscriber is current; none is installed here.
    pub fn new(
        env: ServiceEnv,
        vars: impl IntoIterator<Item = (String, String)>,
        version: &'static str,
    ) -> Self {
        let discovery = Discovery::new(env.registry.clone(), vars);
        let peers = Peers::new(discovery, env.peer_timeout);
        Self {
            env,
            peers,
            telemetry: Telemetry::default(),
            trace_mode: Mode::Local,
            version,
            body_limit: DEFAULT_BODY_LIMIT,
            started: Instant::now(),
        }
    }

    /// A discovery of its own, for a task that finds peers apart from the request path (the
    /// bus's relay and consumers).
    pub fn discovery(&self) -> crate::Discovery {
        crate::Discovery::new(self.env.registry.clone(), std::env::vars())
    }

    /// This service's data folder, created on first use.
    pub fn data_dir(&self) -> Result<std::path::PathBuf, KitError> {
        std::fs::create_dir_all(&self.env.data_dir).map_err(|source| KitError::Dir {
            path: self.env.data_dir.display().to_string(),
            source,
        })?;
        Ok(self.env.data_dir.clone())
    }

    /// `app` with what every service has: `/health`, JSON errors, the body limit, tracing and
    /// access logs. Tests call this to exercise a service exactly as it is served.
    /// The kit answers `GET /health` only where `app` has no route of its own for it: an app's
    /// own health check wins.
    pub fn router(&self, app: Router) -> Router {
        let kit = Arc::new(self.clone());
        app.layer(middleware::from_fn_with_state(kit, observe))
            .layer(middleware::from_fn(crate::error::json_errors))
            .layer(DefaultBodyLimit::max(self.body_limit))
    }

    /// Serves `app` until SIGTERM or SIGINT, then drains; the exit code for `main`.
    pub async fn serve(self, app: Router) -> ExitCode {
        exit_code(self.serve_until(app, shutdown_signal()).await)
    }

    /// Serves `app` until `shutdown` completes, then stops accepting and lets in-flight requests
    /// finish within the drain timeout.
    ///
    /// Requests are served by one single-threaded runtime per core, all accepting on the one
    /// listening socket, as nginx's workers do: a request and the calls it makes stay on one
    /// thread from start to end, with no thread waking another. On a two-core machine, the
    /// work-stealing runtime spent a fifth of a proxied request's time in such wake-ups.
    pub async fn serve_until(
        self,
        app: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), KitError> {
        self.serve_inner(app, None, shutdown).await
    }

    /// As `serve`, for a gateway: the requests `proxy` routes to another service take the
    /// kit's own HTTP/1.1 proxy path (docs/data-path.md), and `app` answers the rest.
    pub async fn serve_proxy(self, app: Router, proxy: impl crate::proxy::Proxy) -> ExitCode {
        let served = self
            .serve_inner(app, Some(Arc::new(proxy)), shutdown_signal())
            .await;
        exit_code(served)
    }

    async fn serve_inner(
        self,
        app: Router,
        proxy: Option<Arc<dyn crate::proxy::Proxy>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), KitError> {
        let addr = self.env.addr;
        let listener =
            std::net::TcpListener::bind(addr).map_err(|source| KitError::Bind { addr, source })?;
        listener.set_nonblocking(true).map_err(KitError::Serve)?;
        let local = listener.local_addr().map_err(KitError::Serve)?;
        tracing::info!(addr = %local, version = self.version, "listening");
        let drain = self.env.drain_timeout;
        let telemetry = self.telemetry.clone();
        let router = self.router(app);
        let kit = Arc::new(self);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        for n in 0..worker_count() {
            let listener = listener.try_clone().map_err(KitError::Serve)?;
            let (router, stopping) = (router.clone(), stopping.clone());
            let proxy = proxy.clone().map(|proxy| {
                crate::proxy::Worker::new(kit.clone(), proxy, router.clone(), stopping.clone())
            });
            let (done, finished) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name(format!("msctl-kit-serve-{n}"))
                .spawn(move || {
                    let served = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .and_then(|runtime| {
                            runtime.block_on(async move {
                                let listener = tokio::net::TcpListener::from_std(listener)?;
                                if let Some(worker) = proxy {
                                    return crate::proxy::serve(listener, worker).await;
                                }
                                crate::proxy::serve_router(listener, router, stopping).await
                            })
                        });
                    let _ = done.send(served);
                })
                .map_err(KitError::Serve)?;
            workers.push(finished);
        }
        drop(listener);
        let served = async {
            for worker in workers {
                // A worker that went away without a word panicked: its error is the first one.
                worker
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("a server thread panicked")))
                    .map_err(KitError::Serve)?;
            }
            Ok::<(), KitError>(())
        };
        tokio::pin!(served);
        tokio::select! {
            result = &mut served => result?,
            () = shutdown => {
                tracing::info!(drain_ms = drain.as_millis() as u64, "shutting down");
                let _ = stop.send(true);
                match tokio::time::timeout(drain, &mut served).await {
                    Ok(result) => result?,
                    Err(_) => tracing::warn!("drain timeout: exiting with requests in flight"),
                }
            }
        }
        // Spans and log records of the last requests are still in the exporters' batches.
        tracing::info!("stopped");
        telemetry.flush(FLUSH_ON_EXIT).await;
        Ok(())
    }
}

/// The exit code for `main` once serving ended: a failure is logged first.
fn exit_code(served: Result<(), KitError>) -> ExitCode {
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// How many threads serve requests: one per core.
fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn health(kit: &Kit) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "service": kit.env.service,
        "instance": kit.env.instance,
        "version": kit.version,
        "uptime_ms": kit.started.elapsed().as_millis() as u64,
    }))
}

/// Gives each request its server span (a child of the caller's, per `traceparent`), answers
/// with the span's `traceparent`, and writes an access log line in it. Health probes are left
/// out of both.
async fn observe(State(kit): State<Arc<Kit>>, mut req: Request, next: Next) -> Response {
    if req.uri().path() == "/health" {
        // Unless the app has a route for exactly /health, the kit's answers; a catch-all such
        // as the gateway's `/{service}` does not count.
        let apps_own = req
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|m| m.as_str() == "/health");
        if !apps_own && req.method() == axum::http::Method::GET {
            return health(&kit).into_response();
        }
        return next.run(req).await;
    }
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let seen = Observation::begin(&kit, req.method(), req.uri().path(), req.headers(), matched);
    req.extensions_mut().insert(seen.ctx.clone());
    let mut response = seen.run(next.run(req)).await;
    let route = response
        .extensions()
        .get::<RouteName>()
        .map(|r| r.0.clone());
    if let Some(traceparent) = seen.finish(response.status(), route) {
        response.headers_mut().insert("traceparent", traceparent);
    }
    response
}

/// One request as the kit observes it: its server span (or, where none is recorded, the trace
/// context it runs in), its deadline, and its access log line once it is answered. Begun before
/// the request is handled, finished once its answer's head is known.
pub(crate) struct Observation {
    clock: Instant,
    method: axum::http::Method,
    path: String,
    matched: Option<String>,
    span: tracing::Span,
    /// This request's OpenTelemetry span, to be named and annotated.
    own: Option<opentelemetry::Context>,
    /// The context the request runs in when it has no such span: the caller's with tracing off,
    /// or, in a trace the caller did not sample, one with this server's own span id, so that log
    /// lines and calls carry ids though nothing is recorded.
    outside: Option<opentelemetry::Context>,
    deadline: Option<tokio::time::Instant>,
    pub(crate) ctx: RequestContext,
}

impl Observation {
    /// `matched` is the router's route for the request, if it has one.
    pub(crate) fn begin(
        kit: &Kit,
        method: &axum::http::Method,
        path: &str,
        headers: &axum::http::HeaderMap,
        matched: Option<String>,
    ) -> Self {
        let clock = Instant::now();
        let deadline = crate::deadline::from_headers(headers);
        let parent = trace_context::extract(headers);
        let make_span = || {
            // Named now by the router's route, so that a request its client gave up on (its
            // span ends when the future is dropped) is still told apart; a handler's own name
            // wins at the end.
            tracing::info_span!(
                "request",
                otel.name = %format_args!("{method} {}", matched.as_deref().unwrap_or("unmatched")),
                otel.kind = "server",
                http.request.method = %method,
                url.path = %path,
                server.address = %kit.env.addr.ip(),
                server.port = kit.env.addr.port(),
            )
        };
        let traced = kit.trace_mode != Mode::Off;
        // A request that starts a trace is decided here, so that a dropped one costs no more
        // than one whose caller did not sample it.
        let new_trace = (traced && !parent.span().span_context().is_valid())
            .then(crate::sampling::NewTrace::decide)
            .flatten();
        let unsampled = match &new_trace {
            Some(t) if !t.kept() => Some(own_unsampled(t.id, TraceState::default())),
            _ if traced && not_sampled(&parent) => {
                let span = parent.span();
                let sc = span.span_context();
                Some(own_unsampled(sc.trace_id(), sc.trace_state().clone()))
            }
            _ => None,
        };
        let (span, own, outside) = if let Some(cx) = unsampled {
            // No layer records a span here (the span layer leaves unsampled traces alone; the
            // others take events only), so none is made; the context carries the ids.
            (tracing::Span::none(), None, Some(cx))
        } else {
            let span = make_span();
            // Fails only where no OpenTelemetry layer is installed: then there are no spans to
            // parent.
            let _ = span.set_parent(parent.clone());
            let cx = {
                let _chosen = new_trace.map(crate::sampling::NewTrace::choose);
                span.context()
            };
            if cx.span().span_context().is_valid() {
                (span, Some(cx), None)
            } else {
                (span, None, Some(parent))
            }
        };
        let ctx = RequestContext::of(own.as_ref().or(outside.as_ref()).expect("one is set"));
        Self {
            clock,
            method: method.clone(),
            path: path.to_string(),
            matched,
            span,
            own,
            outside,
            deadline,
            ctx,
        }
    }

    /// Runs `work`, the handling of the request, in it: its own spans and calls are children of
    /// the server span, its log lines carry the request's ids, and the caller's remaining
    /// budget bounds every call it makes. With no span of its own, the outside context is the
    /// current one, and calls pass it on.
    pub(crate) async fn run<F: Future>(&self, work: F) -> F::Output {
        let run = crate::deadline::within(self.deadline, work).instrument(self.span.clone());
        match &self.outside {
            None => run.await,
            Some(cx) => run.with_context(cx.clone()).await,
        }
    }

    /// Ends the server span with the answer's status and `route` (a handler's own name for it,
    /// else the router's), writes the access log line, and gives the `traceparent` to answer
    /// with.
    pub(crate) fn finish(self, status: StatusCode, route: Option<String>) -> Option<HeaderValue> {
        let route = route.or(self.matched);
        let method = &self.method;
        // A root the sampler dropped still has a span, but one that records nothing.
        if let Some(cx) = self.own.as_ref().filter(|cx| cx.span().is_recording()) {
            let otel = cx.span();
            otel.update_name(format!(
                "{method} {}",
                route.as_deref().unwrap_or("unmatched")
            ));
            if let Some(route) = route {
                otel.set_attribute(opentelemetry::KeyValue::new("http.route", route));
            }
            otel.set_attribute(opentelemetry::KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
            // A server span is an error only when the server failed, not when the client did.
            if status.is_server_error() {
                otel.set_attribute(opentelemetry::KeyValue::new(
                    "error.type",
                    status.as_u16().to_string(),
                ));
                otel.set_status(Status::error(status.canonical_reason().unwrap_or_default()));
            }
        }
        {
            let _current = self.outside.map(opentelemetry::Context::attach);
            self.span.in_scope(|| {
                tracing::info!(
                    method = %method,
                    path = %self.path,
                    status = status.as_u16(),
                    ms = millis(self.clock.elapsed()),
                    "request"
                );
            });
        }
        self.ctx
            .trace
            .and_then(|trace| HeaderValue::from_bytes(&trace.header_bytes()).ok())
    }
}

/// Whether the caller sent a trace it did not sample.
fn not_sampled(parent: &opentelemetry::Context) -> bool {
    let span = parent.span();
    let sc = span.span_context();
    sc.is_valid() && !sc.is_sampled()
}

/// An unsampled trace with a span id of this server's: never recorded, but passed on and
/// written on log lines.
fn own_unsampled(trace_id: TraceId, state: TraceState) -> opentelemetry::Context {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags};
    let id = std::iter::repeat_with(rand::random::<u64>)
        .find(|n| *n != 0)
        .expect("a nonzero id");
    opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        trace_id,
        SpanId::from(id),
        TraceFlags::default(),
        false,
        state,
    ))
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

/// `value` written as JSON, to answer with now (`json_answer`) or to keep and answer with later.
pub fn json_bytes(value: &impl serde::Serialize) -> Result<axum::body::Bytes, crate::ApiError> {
    serde_json::to_vec(value)
        .map(axum::body::Bytes::from)
        .map_err(|e| crate::ApiError::internal(format!("cannot write the answer: {e}")))
}

/// A 200 answer whose body is JSON written already.
pub fn json_answer(body: axum::body::Bytes) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A 404 with the JSON error shape, for handlers that find nothing.
pub fn not_found(message: impl Into<String>) -> Response {
    crate::ApiError::new(StatusCode::NOT_FOUND, "not_found", message).into_response()
}

/// Logs a start-up failure and gives the exit code for `main`.
pub fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    crate::log::write_line("error", "", "", &e.to_string());
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TraceParent;
    use crate::testing::{attribute, capture_spans};
    use axum::body::Body;
    use axum::routing::{get, post};
    use opentelemetry::trace::SpanKind;
    use tower::ServiceExt;

    fn kit() -> Kit {
        let env = ServiceEnv::from_lookup("demo", |_| None).unwrap();
        Kit::new(env, [], "9.9.9")
    }

    fn app() -> Router {
        Router::new().route("/echo", post(|body: axum::body::Bytes| async move { body }))
            .route("/item/{id}", get(|axum::extract::Path(id): axum::extract::Path<u32>| async move { id.to_string() }))
    }

    async fn send(req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let res = kit().router(app()).oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    fn get_req(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn health_names_the_instance() {
        let (status, headers, body) = send(get_req("/health")).await;
        assert_eq!(status, 200);
        assert_eq!(body["service"], "demo");
        assert_eq!(body["instance"], "demo-1");
        assert_eq!(body["version"], "9.9.9");
        assert!(body["uptime_ms"].is_u64());
        assert!(
            headers.get("traceparent").is_none(),
            "health probes are not traced"
        );
    }

    #[tokio::test]
    async fn an_apps_own_health_route_wins_over_the_kits() {
        let app = Router::new().route("/health", get(|| async { "app says ok" }));
        let res = kit().router(app).oneshot(get_req("/health")).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"app says ok");
        // Other methods on the kit's /health are refused as any unknown route is.
        let (status, _, _) = send(Request::post("/health").body(Body::empty()).unwrap()).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn framework_errors_become_json() {
        let (status, _, body) = send(get_req("/nope")).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "not_found");
        assert_eq!(body["error"]["message"], "no route for GET /nope");

        let (status, _, body) = send(Request::delete("/echo").body(Body::empty()).unwrap()).await;
        assert_eq!(status, 405);
        assert_eq!(body["error"]["code"], "method_not_allowed");

        let (status, _, body) = send(get_req("/item/abc")).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "bad_request");

        let big = vec![b'x'; DEFAULT_BODY_LIMIT + 1];
        let (status, _, body) = send(Request::post("/echo").body(Body::from(big)).unwrap()).await;
        assert_eq!(status, 413);
        assert_eq!(body["error"]["code"], "payload_too_large");
    }

    #[tokio::test]
    async fn answers_carry_the_server_span_traceparent() {
        let spans = capture_spans();
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let req = Request::get("/item/3")
            .header("traceparent", incoming)
            .body(Body::empty())
            .unwrap();
        let (status, headers, _) = send(req).await;
        assert_eq!(status, 200);
        let out = TraceParent::parse(headers["traceparent"].to_str().unwrap()).unwrap();
        assert_eq!(out.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(out.span_id_hex(), "00f067aa0ba902b7");

        // An invalid header starts a new trace; it is never an error.
        let req = Request::get("/item/3")
            .header("traceparent", "garbage")
            .body(Body::empty())
            .unwrap();
        let (status, headers, _) = send(req).await;
        assert_eq!(status, 200);
        assert!(TraceParent::parse(headers["traceparent"].to_str().unwrap()).is_some());
        let server = spans.named("GET /item/{id}");
        assert_eq!(server.span_kind, SpanKind::Server);
        assert_eq!(server.span_context.span_id().to_bytes(), out.span_id);
        assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(
            attribute(&server, "http.response.status_code"),
            Some(200i64.into())
        );
        assert_eq!(attribute(&server, "http.route"), Some("/item/{id}".into()));
        assert_eq!(
            attribute(&server, "http.request.method"),
            Some("GET".into())
        );
    }

    #[tokio::test]
    async fn a_handlers_own_spans_nest_under_the_server_span() {
        let spans = capture_spans();
        #[tracing::instrument]
        fn lookup(id: u32) -> u32 {
            let _q = crate::db_span("SELECT", "items").entered();
            id
        }
        let app = Router::new().route(
            "/item/{id}",
            get(
                |axum::extract::Path(id): axum::extract::Path<u32>| async move {
                    lookup(id).to_string()
                },
            ),
        );
        let res = kit().router(app).oneshot(get_req("/item/7")).await.unwrap();
        assert_eq!(res.status(), 200);
        let server = spans.named("GET /item/{id}");
        let handler = spans.named("lookup");
        let query = spans.named("SELECT items");
        assert_eq!(handler.parent_span_id, server.span_context.span_id());
        assert_eq!(query.parent_span_id, handler.span_context.span_id());
        assert_eq!(
            query.span_context.trace_id(),
            server.span_context.trace_id()
        );
        assert_eq!(attribute(&query, "db.system.name"), Some("sqlite".into()));
        assert_eq!(
            attribute(&query, "db.operation.name"),
            Some("SELECT".into())
        );
        assert_eq!(
            attribute(&handler, "id"),
            Some("7".into()),
            "recorded with Debug"
        );
    }

    #[tokio::test]
    async fn a_failing_handler_makes_an_error_span_and_a_client_error_does_not() {
        let spans = capture_spans();
        let app = Router::new()
            .route("/boom", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route("/bad", get(|| async { StatusCode::BAD_REQUEST }));
        kit()
            .router(app.clone())
            .oneshot(get_req("/boom"))
            .await
            .unwrap();
        kit().router(app).oneshot(get_req("/bad")).await.unwrap();
        let boom = spans.named("GET /boom");
        assert_eq!(
            boom.status,
            opentelemetry::trace::Status::error("Service Unavailable")
        );
        assert_eq!(attribute(&boom, "error.type"), Some("503".into()));
        assert_eq!(
            spans.named("GET /bad").status,
            opentelemetry::trace::Status::Unset
        );
    }

    #[tokio::test]
    async fn a_request_its_client_gave_up_on_is_named_by_its_route() {
        let spans = capture_spans();
        let app = Router::new().route(
            "/slow/{id}",
            get(|| async { std::future::pending::<StatusCode>().await }),
        );
        let served = kit().router(app).oneshot(get_req("/slow/1"));
        assert!(
            tokio::time::timeout(Duration::from_millis(20), served)
                .await
                .is_err()
        );
        let server = spans.named("GET /slow/{id}");
        assert_eq!(server.span_kind, SpanKind::Server);
    }

    #[tokio::test]
    async fn every_tracestate_header_reaches_the_handler_as_one_list() {
        let _spans = capture_spans();
        let app = Router::new().route(
            "/state",
            get(|ctx: RequestContext| async move { ctx.tracestate.unwrap_or_default() }),
        );
        let req = Request::get("/state")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
            )
            .header("tracestate", "congo=t61rcWkgMzE")
            .header("tracestate", "rojo=00f067aa0ba902b7")
            .body(Body::empty())
            .unwrap();
        let res = kit().router(app).oneshot(req).await.unwrap();
        let out = res.headers()["traceparent"].to_str().unwrap().to_string();
        assert!(
            out.ends_with("-01"),
            "version 00 flags other than sampled go on as zero: {out}"
        );
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    }

    async fn json_of(res: Response) -> serde_json::Value {
        let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// A handler that records a span and says which trace it runs in and whether it is sampled.
    fn traced_app() -> Router {
        Router::new().route(
            "/t",
            get(|ctx: RequestContext| async move {
                let _q = crate::db_span("SELECT", "items").entered();
                let current = opentelemetry::Context::current();
                let span = current.span();
                let sc = span.span_context();
                axum::Json(serde_json::json!({
                    "traceparent": ctx.trace.map(|t| t.header_value()),
                    "current_trace": sc.trace_id().to_string(),
                    "current_span": sc.span_id().to_string(),
                    "sampled": sc.is_sampled(),
                    "unsampled_here": crate::sampling::in_unsampled_trace(),
                }))
            }),
        )
    }

    #[tokio::test]
    async fn a_trace_the_caller_did_not_sample_records_nothing_but_carries_ids() {
        let spans = capture_spans();
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let req = Request::get("/t")
            .header("traceparent", incoming)
            .header("tracestate", "ot=th:8")
            .body(Body::empty())
            .unwrap();
        let res = kit().router(traced_app()).oneshot(req).await.unwrap();
        let out = res.headers()["traceparent"].to_str().unwrap().to_string();
        let body = json_of(res).await;
        let parsed = TraceParent::parse(&out).unwrap();
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(
            parsed.span_id_hex(),
            "00f067aa0ba902b7",
            "a span id of its own"
        );
        assert!(out.ends_with("-00"), "still not sampled: {out}");
        assert_eq!(
            body["traceparent"],
            out.as_str(),
            "the handler sees the same ids"
        );
        assert_eq!(body["current_trace"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(body["current_span"], parsed.span_id_hex().as_str());
        assert_eq!(body["sampled"], false);
        assert_eq!(body["unsampled_here"], true);
        assert!(
            spans.finished().is_empty(),
            "no span is made in an unsampled trace: {:?}",
            spans
                .finished()
                .iter()
                .map(|s| s.name.to_string())
                .collect::<Vec<_>>()
        );

        // The same request sampled makes the server span and the handler's.
        let req = Request::get("/t")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(Body::empty())
            .unwrap();
        let res = kit().router(traced_app()).oneshot(req).await.unwrap();
        assert!(
            res.headers()["traceparent"]
                .to_str()
                .unwrap()
                .ends_with("-01")
        );
        spans.named("GET /t");
        spans.named("SELECT items");
    }

    #[tokio::test]
    async fn a_root_the_sampler_drops_makes_no_child_spans() {
        let spans =
            crate::testing::capture_spans_with(opentelemetry_sdk::trace::Sampler::AlwaysOff);
        let res = kit()
            .router(traced_app())
            .oneshot(get_req("/t"))
            .await
            .unwrap();
        let out = res.headers()["traceparent"].to_str().unwrap().to_string();
        assert!(out.ends_with("-00"), "{out}");
        let body = json_of(res).await;
        assert_eq!(body["unsampled_here"], true);
        assert_eq!(body["traceparent"], out.as_str());
        assert!(spans.finished().is_empty());
    }

    #[tokio::test]
    async fn a_root_past_the_rate_carries_its_weight_downstream() {
        let sampler = crate::sampling::RateSampler::new(1.0);
        let spans = crate::testing::capture_spans_with(sampler);
        let app = Router::new().route(
            "/w",
            get(|ctx: RequestContext| async move { ctx.tracestate.unwrap_or_default() }),
        );
        // The first window keeps everything; after it, about one a second.
        let mut weights = Vec::new();
        let start = std::time::Instant::now();
        let mut sent = 0;
        while weights.is_empty() && start.elapsed() < Duration::from_secs(10) {
            let res = kit()
                .router(app.clone())
                .oneshot(get_req("/w"))
                .await
                .unwrap();
            sent += 1;
            let sampled = res.headers()["traceparent"]
                .to_str()
                .unwrap()
                .ends_with("-01");
            let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
            let state = String::from_utf8(body.to_vec()).unwrap();
            if sampled && start.elapsed() > Duration::from_millis(1100) {
                weights.push(msctl_contract::sampling::adjusted_count(Some(&state)));
            }
        }
        assert!(
            weights.iter().any(|w| *w > 1.0),
            "past the rate, kept traces carry ot=th in their tracestate: {weights:?}"
        );
        let server = spans.finished();
        assert!(
            server.len() < sent,
            "{} spans of {sent} requests",
            server.len()
        );
    }

    #[tokio::test]
    async fn requests_are_served_on_the_kits_own_threads_and_drained_at_shutdown() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env =
            ServiceEnv::from_lookup("demo", |k| (k == "PORT").then(|| port.to_string())).unwrap();
        let entered = Arc::new(tokio::sync::Notify::new());
        let app = Router::new()
            .route(
                "/thread",
                get(|| async {
                    std::thread::current()
                        .name()
                        .unwrap_or_default()
                        .to_string()
                }),
            )
            .route(
                "/slow",
                get(
                    |State(entered): State<Arc<tokio::sync::Notify>>| async move {
                        entered.notify_one();
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        "done"
                    },
                ),
            )
            .with_state(entered.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(Kit::new(env, [], "9.9.9").serve_until(app, async {
            let _ = stopped.await;
        }));
        let caller = crate::testing::kit(
            "caller",
            &[("DEMO_URL", format!("http://127.0.0.1:{port}"))],
        );
        let get_path = |path: &'static str| {
            let peers = caller.peers.clone();
            async move {
                peers
                    .send(crate::PeerRequest::get("demo", path, path))
                    .await
            }
        };
        let mut answer = get_path("/thread").await;
        for _ in 0..100 {
            if answer.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            answer = get_path("/thread").await;
        }
        let thread = answer.expect("the server listens");
        assert!(
            thread.body.starts_with(b"msctl-kit-serve-"),
            "served on {:?}",
            String::from_utf8_lossy(&thread.body)
        );

        // A request in flight when the service is told to stop is answered; then it stops.
        let slow = tokio::spawn(get_path("/slow"));
        entered.notified().await;
        stop.send(()).unwrap();
        let slow = slow
            .await
            .unwrap()
            .expect("the request in flight is answered");
        assert_eq!(
            (slow.status, &slow.body[..]),
            (StatusCode::OK, &b"done"[..])
        );
        server.await.unwrap().expect("the server stops cleanly");
        assert!(matches!(
            get_path("/thread").await,
            Err(crate::PeerError::Unreachable { .. })
        ));
    }
}
