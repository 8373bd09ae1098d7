//! Trace context in the kit: W3C `traceparent` and `tracestate` read and written by the
//! `opentelemetry` crate's TraceContext propagator, through a carrier that applies the parts of
//! the spec the propagator leaves to its caller.

pub use msctl_contract::trace_context::{FLAG_SAMPLED, TraceParent, combine_tracestate, hex};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::convert::Infallible;

/// The trace context of the request being served: the server span's own ids, or, with tracing
/// off, the caller's.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub trace: Option<TraceParent>,
    pub tracestate: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_else(|| RequestContext::of(&opentelemetry::Context::current())))
    }
}

impl RequestContext {
    /// The ids of the span `cx` holds, if it holds a valid one.
    pub fn of(cx: &opentelemetry::Context) -> Self {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return Self {
                trace: None,
                tracestate: None,
            };
        }
        let state = sc.trace_state().header();
        Self {
            trace: TraceParent::new(
                sc.trace_id().to_bytes(),
                sc.span_id().to_bytes(),
                sc.trace_flags().to_u8(),
            ),
            tracestate: (!state.is_empty()).then_some(state),
        }
    }
}

/// The headers of a request as the propagator reads them. The propagator reads one value per
/// header and accepts ids shorter than the spec's fixed widths, so the carrier hands it a
/// `traceparent` only when there is exactly one of the fixed shape, and every `tracestate`
/// header combined into one list (RFC 9110 §5.3).
struct Incoming {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Incoming {
    fn read(headers: &HeaderMap) -> Self {
        let mut parents = headers.get_all("traceparent").iter();
        let traceparent = match (parents.next(), parents.next()) {
            (Some(one), None) => one
                .to_str()
                .ok()
                .filter(|v| fixed_shape(v))
                .map(str::to_string),
            _ => None,
        };
        let tracestate = combine_tracestate(
            headers
                .get_all("tracestate")
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        Self {
            traceparent,
            tracestate,
        }
    }
}

/// `vv-<32>-<16>-ff`, perhaps followed by `-` and more in a later version.
fn fixed_shape(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 55
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && (b.len() == 55 || b[55] == b'-')
}

impl Extractor for Incoming {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

struct Outgoing<'a>(&'a mut HeaderMap);

impl Injector for Outgoing<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator's two names are known; parsing them on every call is a cost of its own.
        let name = match key {
            "traceparent" => Ok(HeaderName::from_static("traceparent")),
            "tracestate" => Ok(HeaderName::from_static("tracestate")),
            other => HeaderName::from_bytes(other.as_bytes()),
        };
        if let (Ok(name), Ok(value)) = (name, HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The caller's context from a request's headers; an empty context when it sent none or an
/// invalid one, and the request then starts a trace.
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Incoming::read(headers))
}

/// Writes the context of `cx`'s span into `headers`, replacing any the caller sent.
pub fn inject(cx: &opentelemetry::Context, headers: &mut HeaderMap) {
    headers.remove("traceparent");
    headers.remove("tracestate");
    TraceContextPropagator::new().inject_context(cx, &mut Outgoing(headers));
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(values: &[&str]) -> Option<TraceParent> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("traceparent", HeaderValue::from_str(v).unwrap());
        }
        RequestContext::of(&extract(&headers)).trace
    }

    fn sent(parent: &str) -> String {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_str(parent).unwrap());
        let cx = extract(&headers);
        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        out["traceparent"].to_str().unwrap().to_string()
    }

    #[test]
    fn the_spec_example_round_trips() {
        let tp = parse(&[VALID]).unwrap();
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(sent(VALID), VALID);
    }

    #[test]
    fn only_the_sampled_flag_goes_on() {
        let id = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
        assert!(sent(&format!("{id}-00")).ends_with("-00"));
        assert!(sent(&format!("{id}-ff")).ends_with("-01"));
        assert!(sent(&format!("{id}-fe")).ends_with("-00"));
    }

    #[test]
    fn invalid_headers_start_a_new_trace() {
        let cases = msctl_contract::trace_context::INVALID_TRACEPARENTS;
        for case in cases {
            assert_eq!(parse(&[case]), None, "{case:?} should be invalid");
        }
    }

    #[test]
    fn a_higher_version_is_read_by_its_first_four_fields() {
        let tp = parse(&[
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        ])
        .unwrap();
        assert_eq!(tp.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(
            sent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more"),
            VALID,
            "always sent as version 00"
        );
        // ... but only when the extra part is set off by a dash
        assert_eq!(
            parse(&["cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"]),
            None
        );
        assert!(parse(&["cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]).is_some());
    }

    #[test]
    fn two_traceparent_headers_are_invalid() {
        assert!(parse(&[VALID]).is_some());
        assert_eq!(parse(&[VALID, VALID]), None);
    }

    #[test]
    fn every_tracestate_header_is_kept_in_order() {
        let mut headers = HeaderMap::new();
        headers.append("traceparent", VALID.parse().unwrap());
        headers.append("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
        headers.append("tracestate", "rojo=00f067aa0ba902b7".parse().unwrap());
        let cx = extract(&headers);
        assert_eq!(
            RequestContext::of(&cx).tracestate.as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        assert_eq!(out["tracestate"], "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    }

    #[test]
    fn tracestate_without_a_valid_traceparent_is_dropped() {
        let mut headers = HeaderMap::new();
        headers.append("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
        let mut out = HeaderMap::new();
        inject(&extract(&headers), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}
