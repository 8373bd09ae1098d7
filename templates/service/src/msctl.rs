//! How this service takes part in an msctl system; written by `msctl scaffold`, yours to change.
//!
//! The contract, which any language can keep:
//! - listen on `PORT` on loopback (`MSCTL_LISTEN`, such as `0.0.0.0:8080`, in a container);
//! - answer `GET /health`;
//! - find peers in the registry file named by `MSCTL_REGISTRY` when msctl runs the service, and
//!   through `<NAME>_URL` otherwise (a cluster, a test, a run by hand);
//! - trace with the stock OpenTelemetry SDK, which exports wherever the standard
//!   `OTEL_EXPORTER_OTLP_*` variables point, passing W3C trace context on every call;
//! - on SIGTERM, finish the requests in flight and send the last spans.
//!
//! Only crates from crates.io are used, so the service builds wherever it is copied.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// This instance: its names, where it listens, and its tracer.
pub struct Service {
    pub name: String,
    pub instance: String,
    addr: SocketAddr,
    tracer: Option<SdkTracerProvider>,
}

fn var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

impl Service {
    /// Reads the environment msctl gives every instance, and installs logging (to stdout,
    /// filtered by `RUST_LOG`) and tracing (off with `MSCTL_TRACE=off`).
    pub fn from_env(name: &str) -> Result<Self, String> {
        let name = var("MSCTL_SERVICE").unwrap_or_else(|| name.to_string());
        let instance = var("MSCTL_INSTANCE").unwrap_or_else(|| format!("{name}-1"));
        let addr = match (var("MSCTL_LISTEN"), var("PORT")) {
            (Some(listen), _) => listen.parse().map_err(|e| {
                format!("MSCTL_LISTEN={listen:?} is not an address like 0.0.0.0:8080: {e}")
            })?,
            (None, Some(port)) => {
                let port: u16 = port
                    .parse()
                    .map_err(|e| format!("PORT={port:?} is not a port number: {e}"))?;
                SocketAddr::from(([127, 0, 0, 1], port))
            }
            (None, None) => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let tracer = (var("MSCTL_TRACE").as_deref() != Some("off"))
            .then(|| tracer_provider(&name, &instance));
        // Spans only: events are log lines, not span events.
        let spans = tracer.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_filter(filter_fn(|meta| meta.is_span()))
        });
        let logs = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()));
        let _ = tracing_subscriber::registry()
            .with(logs)
            .with(spans)
            .try_init();
        Ok(Self {
            name,
            instance,
            addr,
            tracer,
        })
    }

    /// Serves `app`, with `/health` and a server span per request, until SIGTERM or Ctrl-C.
    pub async fn serve(self, app: Router) -> ExitCode {
        let health = json!({"status": "ok", "service": self.name, "instance": self.instance});
        let app = app
            .layer(axum::middleware::from_fn(observe))
            .route("/health", get(move || async move { Json(health) }));
        let listener = match tokio::net::TcpListener::bind(self.addr).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", self.addr);
                return ExitCode::from(1);
            }
        };
        tracing::info!(addr = %self.addr, "listening");
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await;
        if let Some(provider) = self.tracer {
            // The exporter blocks; the last spans must leave before the process does.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: the server stopped: {e}");
                ExitCode::from(1)
            }
        }
    }
}

fn tracer_provider(name: &str, instance: &str) -> SdkTracerProvider {
    let resource = Resource::builder()
        .with_service_name(name.to_string())
        .with_attribute(KeyValue::new("service.instance.id", instance.to_string()))
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    // Without an endpoint spans still get ids, so that trace context passes through.
    let exporting = var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    if !exporting {
        return builder.build();
    }
    match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => builder.with_batch_exporter(exporter).build(),
        Err(e) => {
            eprintln!("warning: spans are not exported: {e}");
            builder.build()
        }
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// A server span per request, a child of the caller's span when the request carries
/// `traceparent`; the handler runs inside it, so its calls and log lines belong to it.
async fn observe(req: Request, next: Next) -> Response {
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = Empty,
        otel.status_code = Empty,
    );
    let _ = span.set_parent(parent);
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    span.in_scope(|| tracing::info!(%method, %route, status = status.as_u16(), "request"));
    response
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(key.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Finds the other services and calls them, with a timeout and the trace context.
#[derive(Debug, Clone)]
pub struct Peers {
    client: reqwest::Client,
    fixed: Option<Arc<BTreeMap<String, String>>>,
    next: Arc<AtomicUsize>,
}

impl Peers {
    /// Discovery as msctl runs the service: the registry file, else `<NAME>_URL`.
    /// `MSCTL_PEER_TIMEOUT_MS` bounds each call (2000 by default).
    pub fn from_env() -> Self {
        let timeout = var("MSCTL_PEER_TIMEOUT_MS")
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(2000);
        Self::with(Duration::from_millis(timeout), None)
    }

    /// Peers at fixed base URLs, by name: for tests.
    pub fn fixed<'a>(urls: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        let urls = urls.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        Self::with(Duration::from_secs(2), Some(Arc::new(urls)))
    }

    fn with(timeout: Duration, fixed: Option<Arc<BTreeMap<String, String>>>) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .expect("a client with no TLS and no proxy builds");
        Self {
            client,
            fixed,
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The base URL of a healthy instance of `name`, taking turns between instances.
    pub fn url(&self, name: &str) -> Result<String, String> {
        if let Some(fixed) = &self.fixed {
            return fixed
                .get(name)
                .cloned()
                .ok_or_else(|| format!("no address for `{name}`"));
        }
        if let Some(path) = var("MSCTL_REGISTRY") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read the registry {path}: {e}"))?;
            let registry: Value = serde_json::from_str(&text)
                .map_err(|e| format!("the registry {path} is not JSON: {e}"))?;
            let healthy: Vec<&str> = registry["services"][name]["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["state"] == "healthy")
                .filter_map(|i| i["address"].as_str())
                .collect();
            if healthy.is_empty() {
                return Err(format!("`{name}` has no healthy instance"));
            }
            let turn = self.next.fetch_add(1, Ordering::Relaxed) % healthy.len();
            return Ok(format!("http://{}", healthy[turn]));
        }
        let key = format!("{}_URL", name.to_uppercase().replace('-', "_"));
        var(&key).ok_or_else(|| format!("set {key} to reach `{name}`"))
    }

    /// `GET path` on `name`, in a client span: the status and the JSON body (null if none).
    pub async fn get(&self, name: &str, path: &str) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.url(name)?);
        let span = tracing::info_span!(
            "call",
            otel.name = %format_args!("GET {path}"),
            otel.kind = "client",
            http.request.method = "GET",
            url.full = %url,
            peer.service = name,
            http.response.status_code = Empty,
            otel.status_code = Empty,
        );
        let mut headers = HeaderMap::new();
        TraceContextPropagator::new()
            .inject_context(&span.context(), &mut HeadersMut(&mut headers));
        let answer = async {
            let response = self.client.get(&url).headers(headers).send().await?;
            let status = response.status().as_u16();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ))
        }
        .instrument(span.clone())
        .await;
        match answer {
            Ok((status, body)) => {
                span.record("http.response.status_code", status);
                if status >= 500 {
                    span.record("otel.status_code", "ERROR");
                }
                Ok((status, body))
            }
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                Err(format!("`{name}` did not answer: {e}"))
            }
        }
    }
}
