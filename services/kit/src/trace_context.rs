//! Trace context in the kit: fresh random ids, and reading the headers of an axum request. The
//! format itself is the contract's (docs/spans.md).

pub use msctl_contract::trace_context::{FLAG_SAMPLED, TraceParent, combine_tracestate, hex};

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::request::Parts;
use std::convert::Infallible;

/// The trace context of the request being served: the server span's own ids.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub trace: TraceParent,
    pub tracestate: Option<HeaderValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Outside the kit's layers (a handler tested alone) there is no context: start a trace.
        Ok(parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_else(|| RequestContext {
                trace: TraceParent::new_root(),
                tracestate: None,
            }))
    }
}

/// New contexts: a root for a request that came without one, a child for each span under it.
pub trait NewIds {
    /// A new trace with random ids, sampled.
    fn new_root() -> Self;
    /// The same trace and flags, with a new span id.
    fn child(&self) -> Self;
}

impl NewIds for TraceParent {
    fn new_root() -> Self {
        Self {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            flags: FLAG_SAMPLED,
        }
    }

    fn child(&self) -> Self {
        self.with_span(new_span_id())
    }
}

/// The request's `traceparent`, when there is exactly one and it is valid.
pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<TraceParent> {
    let values = headers.get_all("traceparent");
    let mut strs = Vec::new();
    for v in values.iter() {
        strs.push(v.to_str().ok()?);
    }
    TraceParent::from_values(strs.into_iter())
}

/// Every `tracestate` header of the request, combined into one value.
pub fn tracestate(headers: &axum::http::HeaderMap) -> Option<axum::http::HeaderValue> {
    let values: Vec<&str> = headers
        .get_all("tracestate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    combine_tracestate(values).and_then(|v| v.parse().ok())
}

pub fn new_trace_id() -> [u8; 16] {
    loop {
        let id: [u8; 16] = rand::random();
        if id != [0; 16] {
            return id;
        }
    }
}

pub fn new_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn two_traceparent_headers_are_invalid() {
        let mut headers = axum::http::HeaderMap::new();
        headers.append("traceparent", VALID.parse().unwrap());
        assert!(from_headers(&headers).is_some());
        headers.append("traceparent", VALID.parse().unwrap());
        assert_eq!(from_headers(&headers), None);
    }

    #[test]
    fn every_tracestate_header_is_kept() {
        let mut headers = axum::http::HeaderMap::new();
        headers.append("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
        headers.append("tracestate", "rojo=00f067aa0ba902b7".parse().unwrap());
        assert_eq!(
            tracestate(&headers).unwrap(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
    }

    #[test]
    fn new_ids_are_valid_and_distinct() {
        let a = TraceParent::new_root();
        let b = a.child();
        assert_eq!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
        assert_eq!(TraceParent::parse(&b.header_value()), Some(b));
    }
}
