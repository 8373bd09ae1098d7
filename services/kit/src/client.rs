//! Calls to other services: one pooled HTTP client, a timeout on every call, discovery by name,
//! `traceparent` and `tracestate` passed on, and a client span for each call.

use crate::discovery::{Discovery, DiscoveryError};
use crate::error::ApiError;
use crate::span::{KIND_CLIENT, Span, SpanStatus, Tracer, unix_nanos};
use crate::trace_context::{NewIds, RequestContext};
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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

/// The calls a service makes to others. Cheap to clone: all clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    discovery: Discovery,
    timeout: Duration,
    tracer: Tracer,
}

impl Peers {
    pub fn new(discovery: Discovery, timeout: Duration, tracer: Tracer) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client builds with no TLS and no proxy");
        Self {
            inner: Arc::new(Inner {
                http,
                discovery,
                timeout,
                tracer,
            }),
        }
    }

    pub fn discovery(&self) -> &Discovery {
        &self.inner.discovery
    }

    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Sends `req` to a healthy instance of its service, within the timeout, as a child span of `ctx`.
    pub async fn send(
        &self,
        ctx: &RequestContext,
        req: PeerRequest,
    ) -> Result<PeerResponse, PeerError> {
        let started = SystemTime::now();
        let clock = Instant::now();
        let span_ctx = ctx.trace.child();
        let mut attributes = Map::new();
        attributes.insert("http.request.method".into(), json!(req.method.as_str()));
        attributes.insert("peer.service".into(), json!(req.service));
        let result = self.exchange(&req, ctx, &span_ctx, &mut attributes).await;
        let outcome = match &result {
            Ok(r) => Ok(r.status.as_u16()),
            Err(e) => Err((e.error_type(), e.to_string())),
        };
        let status = SpanStatus::of_call(&mut attributes, outcome);
        if self.inner.tracer.is_enabled() {
            let start_ns = unix_nanos(started);
            self.inner.tracer.record(Span {
                trace_id: span_ctx.trace_id_hex(),
                span_id: span_ctx.span_id_hex(),
                parent_span_id: Some(ctx.trace.span_id_hex()),
                name: format!("{} {}", req.method, req.route),
                kind: KIND_CLIENT,
                start_time_unix_nano: start_ns,
                end_time_unix_nano: start_ns + clock.elapsed().as_nanos() as u64,
                status,
                attributes,
                resource: self.inner.tracer.resource().clone(),
            });
        }
        result
    }

    async fn exchange(
        &self,
        req: &PeerRequest,
        ctx: &RequestContext,
        span_ctx: &crate::TraceParent,
        attributes: &mut Map<String, Value>,
    ) -> Result<PeerResponse, PeerError> {
        let endpoint = self.inner.discovery.pick(&req.service)?;
        let url = format!("{}{}", endpoint.base_url, req.path_and_query);
        if let Ok(parsed) = reqwest::Url::parse(&url) {
            if let Some(host) = parsed.host_str() {
                attributes.insert("server.address".into(), json!(host));
            }
            if let Some(port) = parsed.port_or_known_default() {
                attributes.insert("server.port".into(), json!(port));
            }
        }
        attributes.insert("url.full".into(), json!(url));
        let mut headers = req.headers.clone();
        headers.remove("traceparent");
        headers.remove("tracestate");
        if let Ok(v) = HeaderValue::from_str(&span_ctx.header_value()) {
            headers.insert("traceparent", v);
        }
        if let Some(state) = &ctx.tracestate {
            headers.insert("tracestate", state.clone());
        }
        let call = async {
            let response = self
                .inner
                .http
                .request(req.method.clone(), &url)
                .headers(headers)
                .body(req.body.clone())
                .send()
                .await
                .map_err(|e| self.classify(&req.service, &url, e))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response
                .bytes()
                .await
                .map_err(|e| self.classify(&req.service, &url, e))?;
            Ok(PeerResponse {
                status,
                headers,
                body,
                instance: endpoint.instance.clone(),
            })
        };
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(PeerError::Timeout {
                service: req.service.clone(),
                after: self.inner.timeout,
            }),
        }
    }

    fn classify(&self, service: &str, url: &str, e: reqwest::Error) -> PeerError {
        if e.is_timeout() {
            PeerError::Timeout {
                service: service.to_string(),
                after: self.inner.timeout,
            }
        } else if e.is_connect() {
            PeerError::Unreachable {
                service: service.to_string(),
                url: url.to_string(),
                message: crate::error::root_cause(&e),
            }
        } else {
            PeerError::BadAnswer {
                service: service.to_string(),
                message: crate::error::root_cause(&e),
            }
        }
    }
}
