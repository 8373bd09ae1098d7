//! Serving: the `Kit` a service's `main` builds, the layers every service gets, and graceful shutdown.

use crate::client::Peers;
use crate::discovery::Discovery;
use crate::env::ServiceEnv;
use crate::span::{KIND_SERVER, OtlpTarget, Span, SpanStatus, Tracer, unix_nanos};
use crate::trace_context::{self, NewIds, RequestContext, TraceParent};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Map, json};
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::Instrument;

/// Requests larger than this are refused with 413 before a handler sees them.
/// How long a stopping service may spend writing out its last spans.
const FLUSH_ON_EXIT: Duration = Duration::from_secs(2);

pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Set by a handler on its response to name its route more precisely than the router can: the
/// gateway answers `/{service}/{*rest}` and names it `/users/{*rest}`. Spans use this name.
#[derive(Debug, Clone)]
pub struct RouteName(pub String);

/// What one service is: its environment, its peers and its tracer.
#[derive(Debug, Clone)]
pub struct Kit {
    pub env: ServiceEnv,
    pub peers: Peers,
    pub tracer: Tracer,
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
    /// Reads the environment contract and sets up logging, discovery and tracing.
    /// `name` is used when `MSCTL_SERVICE` is unset. Must run inside a Tokio runtime.
    pub fn from_env(name: &str, version: &'static str) -> Result<Self, KitError> {
        let env = ServiceEnv::from_process(name).map_err(KitError::Env)?;
        let tracing_on = std::env::var(msctl_contract::env::TRACE)
            .map(|v| v != "off")
            .unwrap_or(true);
        let otlp = otlp_target(Signal::Traces, |k| std::env::var(k).ok());
        if let Some(logs) = otlp_target(Signal::Logs, |k| std::env::var(k).ok()) {
            crate::log::init(&env.service, &env.instance);
            crate::log::export_to(logs);
        }
        let tracer = if tracing_on {
            Tracer::start(env.trace_dir.as_deref(), otlp, &env.service, &env.instance).map_err(
                |source| KitError::Dir {
                    path: env
                        .trace_dir
                        .as_ref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default(),
                    source,
                },
            )?
        } else {
            Tracer::disabled(&env.service, &env.instance)
        };
        // The service's own `tracing` spans and events go through the kit: spans under the
        // request they run in, events as JSON log lines filtered by RUST_LOG.
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber =
            tracing_subscriber::registry().with(crate::layer::KitLayer::new(tracer.clone()));
        let _ = tracing::subscriber::set_global_default(subscriber);
        Ok(Self::new(env, std::env::vars(), tracer, version))
    }

    /// Builds a kit from explicit parts, for tests and embedding.
    pub fn new(
        env: ServiceEnv,
        vars: impl IntoIterator<Item = (String, String)>,
        tracer: Tracer,
        version: &'static str,
    ) -> Self {
        crate::log::init(&env.service, &env.instance);
        let discovery = Discovery::new(env.registry.clone(), vars);
        let peers = Peers::new(discovery, env.peer_timeout, tracer.clone());
        Self {
            env,
            peers,
            tracer,
            version,
            body_limit: DEFAULT_BODY_LIMIT,
            started: Instant::now(),
        }
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
        match self.serve_until(app, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                crate::log::error(&e.to_string(), json!({}));
                ExitCode::FAILURE
            }
        }
    }

    /// Serves `app` until `shutdown` completes, then stops accepting and lets in-flight requests
    /// finish within the drain timeout.
    pub async fn serve_until(
        self,
        app: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), KitError> {
        let addr = self.env.addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| KitError::Bind { addr, source })?;
        let local = listener.local_addr().map_err(KitError::Serve)?;
        crate::log::info(
            "listening",
            json!({"addr": local.to_string(), "version": self.version}),
        );
        let drain = self.env.drain_timeout;
        let tracer = self.tracer.clone();
        let stop = Arc::new(tokio::sync::Notify::new());
        let notify = stop.clone();
        let server = axum::serve(listener, self.router(app)).with_graceful_shutdown(async move {
            shutdown.await;
            crate::log::info(
                "shutting down",
                json!({"drain_ms": drain.as_millis() as u64}),
            );
            notify.notify_one();
        });
        tokio::select! {
            result = server => result.map_err(KitError::Serve)?,
            _ = async { stop.notified().await; tokio::time::sleep(drain).await } => {
                crate::log::warn("drain timeout: exiting with requests in flight", json!({}));
            }
        }
        // Spans and log lines of the last requests are still in the exporters' buffers.
        tracer.flush(FLUSH_ON_EXIT).await;
        crate::log::flush(FLUSH_ON_EXIT).await;
        crate::log::info("stopped", json!({}));
        Ok(())
    }
}

/// The OpenTelemetry signals the kit exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Logs,
}

/// Where to export a signal, from the OpenTelemetry variables: a per-signal URL is used as is,
/// a base gets `/v1/traces` or `/v1/logs`; headers and the batch delay as the spec names them.
pub fn otlp_target(signal: Signal, lookup: impl Fn(&str) -> Option<String>) -> Option<OtlpTarget> {
    use msctl_contract::env as var;
    let set = |k: &str| lookup(k).filter(|v| !v.is_empty());
    let (own, path, delay) = match signal {
        Signal::Traces => (
            var::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
            "/v1/traces",
            var::OTEL_BSP_SCHEDULE_DELAY,
        ),
        Signal::Logs => (
            var::OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
            "/v1/logs",
            var::OTEL_BLRP_SCHEDULE_DELAY,
        ),
    };
    let url = set(own).or_else(|| {
        set(var::OTEL_EXPORTER_OTLP_ENDPOINT)
            .map(|base| format!("{}{path}", base.trim_end_matches('/')))
    })?;
    Some(OtlpTarget {
        url,
        headers: set(var::OTEL_EXPORTER_OTLP_HEADERS)
            .map(|h| msctl_contract::otlp::parse_headers(&h))
            .unwrap_or_default(),
        every: set(delay)
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or(crate::span::DEFAULT_EXPORT_EVERY),
    })
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

/// Gives each request its trace context, answers with the server span's `traceparent`, records
/// the server span and writes an access log line. Health probes are left out of both.
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
    let started = SystemTime::now();
    let clock = Instant::now();
    let parent = trace_context::from_headers(req.headers());
    let trace = parent
        .map(|p| p.child())
        .unwrap_or_else(TraceParent::new_root);
    // tracestate is meaningless without a valid traceparent, so it is dropped with it.
    let tracestate = parent.and_then(|_| trace_context::tracestate(req.headers()));
    req.extensions_mut()
        .insert(RequestContext { trace, tracestate });
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());

    // Entered while the handler runs, so that its own `tracing` spans are the server span's
    // children and its events carry the request's ids.
    let span = tracing::info_span!("request");
    crate::layer::set_request_context(&span, trace);
    let mut response = next.run(req).instrument(span).await;
    let route = response
        .extensions()
        .get::<RouteName>()
        .map(|r| r.0.clone())
        .or(matched);
    let elapsed = clock.elapsed();
    let status = response.status();
    if let Ok(v) = HeaderValue::from_str(&trace.header_value()) {
        response.headers_mut().insert("traceparent", v);
    }
    crate::log::info(
        "request",
        json!({"method": method.as_str(), "path": path, "status": status.as_u16(), "ms": millis(elapsed), "trace_id": trace.trace_id_hex(), "span_id": trace.span_id_hex()}),
    );
    if kit.tracer.is_enabled() {
        let mut attributes = Map::new();
        attributes.insert("http.request.method".into(), json!(method.as_str()));
        if let Some(route) = &route {
            attributes.insert("http.route".into(), json!(route));
        }
        attributes.insert("url.path".into(), json!(path));
        attributes.insert("http.response.status_code".into(), json!(status.as_u16()));
        attributes.insert(
            "server.address".into(),
            json!(kit.env.addr.ip().to_string()),
        );
        attributes.insert("server.port".into(), json!(kit.env.addr.port()));
        // A server span is an error only when the server failed, not when the client did.
        let span_status = if status.is_server_error() {
            attributes.insert("error.type".into(), json!(status.as_u16().to_string()));
            SpanStatus {
                code: 2,
                message: status.canonical_reason().map(str::to_string),
            }
        } else {
            SpanStatus {
                code: 0,
                message: None,
            }
        };
        let start_ns = unix_nanos(started);
        kit.tracer.record(Span {
            trace_id: trace.trace_id_hex(),
            span_id: trace.span_id_hex(),
            parent_span_id: parent.map(|p| p.span_id_hex()),
            name: format!("{method} {}", route.as_deref().unwrap_or("unmatched")),
            kind: KIND_SERVER,
            start_time_unix_nano: start_ns,
            end_time_unix_nano: start_ns + elapsed.as_nanos() as u64,
            status: span_status,
            attributes,
            resource: kit.tracer.resource().clone(),
        });
    }
    response
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

/// A 404 with the JSON error shape, for handlers that find nothing.
pub fn not_found(message: impl Into<String>) -> Response {
    crate::ApiError::new(StatusCode::NOT_FOUND, "not_found", message).into_response()
}

/// Logs a start-up failure and gives the exit code for `main`.
pub fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    crate::log::error(&e.to_string(), json!({}));
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    fn kit() -> Kit {
        let env = ServiceEnv::from_lookup("demo", |_| None).unwrap();
        Kit::new(env, [], Tracer::disabled("demo", "demo-1"), "9.9.9")
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
    }

    #[tokio::test]
    async fn every_tracestate_header_reaches_the_handler_as_one_list() {
        let app = Router::new().route(
            "/state",
            get(|ctx: RequestContext| async move {
                ctx.tracestate
                    .map(|v| v.to_str().unwrap_or_default().to_string())
                    .unwrap_or_default()
            }),
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
}
