//! Calls to other services: one pooled HTTP client, a timeout on every call, discovery by name,
//! `traceparent` and `tracestate` passed on, and a client span for each call.

use crate::discovery::{Discovery, DiscoveryError};
use crate::error::ApiError;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Status, TraceContextExt};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
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
}

impl Peers {
    pub fn new(discovery: Discovery, timeout: Duration) -> Self {
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
            }),
        }
    }

    pub fn discovery(&self) -> &Discovery {
        &self.inner.discovery
    }

    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Sends `req` to a healthy instance of its service, within the timeout, in a client span
    /// that is a child of the current span: the request's server span, or a handler's own.
    pub async fn send(&self, req: PeerRequest) -> Result<PeerResponse, PeerError> {
        let span = tracing::info_span!(
            "call",
            otel.name = %format_args!("{} {}", req.method, req.route),
            otel.kind = "client",
            http.request.method = %req.method,
            peer.service = %req.service,
        );
        let cx = span.context();
        let own = cx.span().span_context().is_valid();
        // With tracing off there is no client span: the current context (the caller's) goes on.
        let cx = if own {
            cx
        } else {
            opentelemetry::Context::current()
        };
        let result = self.exchange(&req, &cx).await;
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
        result
    }

    async fn exchange(
        &self,
        req: &PeerRequest,
        cx: &opentelemetry::Context,
    ) -> Result<PeerResponse, PeerError> {
        let endpoint = self.inner.discovery.pick(&req.service)?;
        let url = format!("{}{}", endpoint.base_url, req.path_and_query);
        let otel = cx.span();
        if otel.is_recording() {
            if let Ok(parsed) = reqwest::Url::parse(&url) {
                if let Some(host) = parsed.host_str() {
                    otel.set_attribute(KeyValue::new("server.address", host.to_string()));
                }
                if let Some(port) = parsed.port_or_known_default() {
                    otel.set_attribute(KeyValue::new("server.port", i64::from(port)));
                }
            }
            otel.set_attribute(KeyValue::new("url.full", url.clone()));
        }
        let mut headers = req.headers.clone();
        crate::trace_context::inject(cx, &mut headers);
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
