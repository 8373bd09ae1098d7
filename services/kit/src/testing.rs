//! Helpers for in-process tests of services: a kit with a default environment, a one-shot call
//! that returns status and JSON, a real loopback server for a peer, and the spans a test made.

use crate::{Kit, ServiceEnv};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

/// A kit for `service` with default settings and `vars` as its environment (`USERS_URL` and
/// the like). Its spans go to whatever subscriber is current: see [`capture_spans`].
pub fn kit(service: &str, vars: &[(&str, String)]) -> Kit {
    let env = ServiceEnv::from_lookup(service, |_| None).expect("the default environment is valid");
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Kit::new(env, vars, "test")
}

/// As [`kit`], with the peer timeout set: the kit's calls to others use `timeout`.
pub fn kit_with_timeout(service: &str, vars: &[(&str, String)], timeout: Duration) -> Kit {
    let mut env = kit(service, vars).env;
    env.peer_timeout = timeout;
    let vars = vars.iter().map(|(k, v)| (k.to_string(), v.clone()));
    Kit::new(env, vars, "test")
}

/// Sends `req` through `kit.router(app)` and returns the status, headers and JSON body
/// (`Null` for an empty body).
pub async fn call(kit: &Kit, app: Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = kit
        .router(app)
        .oneshot(req)
        .await
        .expect("routers are infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body reads");
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, headers, json)
}

/// A request with a JSON body.
pub fn json_request(method: &str, uri: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request builds")
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .body(Body::empty())
        .expect("request builds")
}

/// Serves `kit.router(app)` on a free loopback port for the rest of the test; returns its base URL.
pub async fn spawn(kit: &Kit, app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback binds");
    let addr: SocketAddr = listener.local_addr().expect("bound");
    let router = kit.router(app);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        // Served for the rest of the test: the sender lives as long as the server.
        let _stop = stop;
        crate::proxy::serve_router(listener, router, stopping).await
    });
    format!("http://{addr}")
}

/// As [`spawn`], for a gateway: the requests `proxy` routes take the kit's proxy path, as
/// `Kit::serve_proxy` serves them.
pub async fn spawn_proxy(kit: &Kit, app: Router, proxy: impl crate::proxy::Proxy) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback binds");
    let addr: SocketAddr = listener.local_addr().expect("bound");
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let worker = crate::proxy::Worker::new(
        std::sync::Arc::new(kit.clone()),
        std::sync::Arc::new(proxy),
        kit.router(app),
        stopping,
    );
    tokio::spawn(async move {
        // Served for the rest of the test: the sender lives as long as the server.
        let _stop = stop;
        crate::proxy::serve(listener, worker).await
    });
    format!("http://{addr}")
}

/// A loopback address where nothing listens: bound, then released.
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback binds");
    format!("http://{}", listener.local_addr().expect("bound"))
}

/// The spans finished while a [`Spans`] guard lives, on this thread: made by the kit's own
/// `tracing` layers and the OpenTelemetry SDK, exported to memory instead of over OTLP.
/// `#[tokio::test]` runs a test and the servers it spawns on one thread, so all are seen.
pub fn capture_spans() -> Spans {
    capture_spans_with(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
        opentelemetry_sdk::trace::Sampler::AlwaysOn,
    )))
}

/// As [`capture_spans`], with the SDK deciding by `sampler`.
pub fn capture_spans_with(sampler: impl opentelemetry_sdk::trace::ShouldSample + 'static) -> Spans {
    // `tracing` caches per call site whether any subscriber wants it. Tests running in parallel
    // threads without a subscriber could cache "no one" for a site this test needs, so a global
    // subscriber that wants every span is installed first; each test's own still decides.
    static WANTS_ALL: std::sync::Once = std::sync::Once::new();
    WANTS_ALL.call_once(|| {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
    let exporter = Memory::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(sampler)
        .build();
    let subscriber = tracing_subscriber::registry().with(crate::telemetry::span_layer(&provider));
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    Spans {
        exporter,
        _provider: provider,
        _guard: guard,
    }
}

pub struct Spans {
    exporter: Memory,
    _provider: SdkTracerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Spans {
    /// Every span finished so far, in the order they ended.
    pub fn finished(&self) -> Vec<SpanData> {
        self.exporter
            .0
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The finished span named `name`; panics naming those there are.
    pub fn named(&self, name: &str) -> SpanData {
        let all = self.finished();
        all.iter()
            .find(|s| s.name == name)
            .cloned()
            .unwrap_or_else(|| {
                let names: Vec<_> = all.iter().map(|s| s.name.to_string()).collect();
                panic!("no span named {name:?}; finished: {names:?}")
            })
    }
}

/// The value of attribute `key` of `span`.
pub fn attribute(span: &SpanData, key: &str) -> Option<opentelemetry::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

#[derive(Debug, Clone, Default)]
struct Memory(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Memory {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if let Ok(mut spans) = self.0.lock() {
            spans.extend(batch);
        }
        Ok(())
    }
}
