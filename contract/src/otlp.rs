//! OTLP/HTTP JSON export (docs/spans.md): spans as an `ExportTraceServiceRequest`, and what a
//! receiver's answer means. Both exporters, the kit's live one and `msctl traces export`, send
//! with their own HTTP client and judge the answer here.

use crate::span::Span;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// The instrumentation scope every span is reported under.
pub const SCOPE: &str = "msctl";

/// One OTLP attribute value: strings, integers (as decimal strings, as OTLP JSON wants int64),
/// booleans and doubles.
fn any_value(v: &Value) -> Value {
    match v {
        Value::String(s) => json!({"stringValue": s}),
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"intValue": n.to_string()}),
        Value::Number(n) => json!({"doubleValue": n.as_f64()}),
        other => json!({"stringValue": other.to_string()}),
    }
}

fn attributes(map: &serde_json::Map<String, Value>) -> Vec<Value> {
    map.iter()
        .map(|(k, v)| json!({"key": k, "value": any_value(v)}))
        .collect()
}

/// The request body for `POST /v1/traces`: spans grouped by resource, with camelCase keys,
/// hex ids and nanosecond times as strings, as the OTLP JSON mapping prescribes.
pub fn export_request(spans: &[Span]) -> Value {
    let mut by_resource: BTreeMap<(String, String), Vec<&Span>> = BTreeMap::new();
    for span in spans {
        by_resource
            .entry((
                span.resource.service_name.clone(),
                span.resource.service_instance_id.clone(),
            ))
            .or_default()
            .push(span);
    }
    let resource_spans: Vec<Value> = by_resource
        .into_iter()
        .map(|((service, instance), spans)| {
            let spans: Vec<Value> = spans
                .into_iter()
                .map(|s| {
                    let mut span = json!({
                        "traceId": s.trace_id,
                        "spanId": s.span_id,
                        "name": s.name,
                        "kind": s.kind,
                        "startTimeUnixNano": s.start_time_unix_nano.to_string(),
                        "endTimeUnixNano": s.end_time_unix_nano.to_string(),
                        "attributes": attributes(&s.attributes),
                        "status": {"code": s.status.code},
                    });
                    if let Some(parent) = &s.parent_span_id {
                        span["parentSpanId"] = json!(parent);
                    }
                    if let Some(message) = &s.status.message {
                        span["status"]["message"] = json!(message);
                    }
                    if let Some(state) = &s.trace_state {
                        span["traceState"] = json!(state);
                    }
                    span
                })
                .collect();
            json!({
                "resource": {"attributes": [
                    {"key": "service.name", "value": {"stringValue": service}},
                    {"key": "service.instance.id", "value": {"stringValue": instance}},
                ]},
                "scopeSpans": [{"scope": {"name": SCOPE, "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
            })
        })
        .collect();
    json!({"resourceSpans": resource_spans})
}

/// The traces URL for an `OTEL_EXPORTER_OTLP_ENDPOINT` base, as the OpenTelemetry spec builds it.
pub fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// The headers of `OTEL_EXPORTER_OTLP_HEADERS`: `Name=value` pairs separated by commas, values
/// percent-decoded (`Authorization=Bearer%20abc`). Malformed pairs are left out.
pub fn parse_headers(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let name = name.trim();
            (!name.is_empty()).then(|| (name.to_string(), percent_decode(value.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What an answer from an OTLP receiver means for the spans sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every span was accepted.
    Accepted,
    /// The receiver took the request but rejected some spans (`partialSuccess`).
    Partial { rejected: u64, message: String },
    /// A status after which the OTLP spec allows a retry: 429, 502, 503, 504.
    Retry,
    /// Any other status: the receiver was reached and refused the request.
    Refused { status: u16, body: String },
}

/// Judges a receiver's answer by its status and body, as the OTLP/HTTP spec says: a 2xx whose
/// body reports `partialSuccess.rejectedSpans` is not a full success.
pub fn verdict(status: u16, body: &[u8]) -> Verdict {
    if (200..300).contains(&status) {
        let partial = serde_json::from_slice::<Value>(body)
            .ok()
            .map(|v| v["partialSuccess"].clone())
            .unwrap_or(Value::Null);
        let rejected = match &partial["rejectedSpans"] {
            // int64 travels as a decimal string in OTLP JSON, but some receivers send a number.
            Value::String(s) => s.parse().unwrap_or(0),
            Value::Number(n) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        let message = partial["errorMessage"].as_str().unwrap_or_default();
        return if rejected > 0 || !message.is_empty() {
            Verdict::Partial {
                rejected,
                message: message.to_string(),
            }
        } else {
            Verdict::Accepted
        };
    }
    if matches!(status, 429 | 502 | 503 | 504) {
        return Verdict::Retry;
    }
    Verdict::Refused {
        status,
        body: String::from_utf8_lossy(body).chars().take(300).collect(),
    }
}

/// Why spans were not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undelivered<E> {
    /// No answer: the sender's own error.
    Unreachable(E),
    /// Answered, and some spans were rejected.
    Partial { rejected: u64, message: String },
    /// Answered with a refusal, or with a retryable status on the last attempt.
    Refused { status: u16, body: String },
}

/// Delivers one export request: `post` sends it and gives the answer's status, `Retry-After`
/// (seconds) and body; `sleep` waits. Up to `attempts` attempts, retrying only where the OTLP
/// spec allows. The one retry loop of msctl and the kit, which bring their own HTTP client.
pub async fn deliver<E, P, PF, S, SF>(
    attempts: u32,
    mut post: P,
    mut sleep: S,
) -> Result<(), Undelivered<E>>
where
    P: FnMut() -> PF,
    PF: std::future::Future<Output = Result<(u16, Option<u64>, Vec<u8>), E>>,
    S: FnMut(Duration) -> SF,
    SF: std::future::Future<Output = ()>,
{
    let attempts = attempts.max(1);
    let mut attempt = 1;
    loop {
        let (status, retry_after, answer) = post().await.map_err(Undelivered::Unreachable)?;
        match verdict(status, &answer) {
            Verdict::Accepted => return Ok(()),
            Verdict::Partial { rejected, message } => {
                return Err(Undelivered::Partial { rejected, message });
            }
            Verdict::Retry if attempt < attempts => {
                sleep(retry_pause(attempt, retry_after)).await;
                attempt += 1;
            }
            Verdict::Retry => {
                return Err(Undelivered::Refused {
                    status,
                    body: String::from_utf8_lossy(&answer).chars().take(300).collect(),
                });
            }
            Verdict::Refused { status, body } => return Err(Undelivered::Refused { status, body }),
        }
    }
}

/// How long to wait before retry number `attempt` (1 for the first): the receiver's
/// `Retry-After` if it gave one, else 200 ms doubling, and never more than 5 s.
pub fn retry_pause(attempt: u32, retry_after_secs: Option<u64>) -> Duration {
    let doubling =
        Duration::from_millis(200).saturating_mul(1 << attempt.saturating_sub(1).min(10));
    retry_after_secs
        .map(Duration::from_secs)
        .unwrap_or(doubling)
        .min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{Resource, SpanStatus};
    use serde_json::Map;

    #[test]
    fn maps_spans_to_the_otlp_json_shape() {
        let mut attrs = Map::new();
        attrs.insert("http.request.method".into(), json!("GET"));
        attrs.insert("http.response.status_code".into(), json!(503));
        let span = Span {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            parent_span_id: Some("1111111111111111".into()),
            name: "GET /users/{id}".into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_100_000_000,
            status: SpanStatus {
                code: 2,
                message: Some("Service Unavailable".into()),
            },
            attributes: attrs,
            resource: Resource {
                service_name: "users".into(),
                service_instance_id: "users-1".into(),
            },
            events: Vec::new(),
            trace_state: None,
        };
        let body = export_request(&[span]);
        let rs = &body["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "users"}})
        );
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(s["parentSpanId"], "1111111111111111");
        assert_eq!(
            s["status"],
            json!({"code": 2, "message": "Service Unavailable"})
        );
        assert!(
            s["attributes"].as_array().unwrap().contains(
                &json!({"key": "http.response.status_code", "value": {"intValue": "503"}})
            )
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
    }
}

#[cfg(test)]
mod verdicts {
    use super::*;
    use std::cell::RefCell;

    /// Runs a future whose parts never wait (the fakes below answer at once).
    fn now<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("a fake waited"),
        }
    }

    /// An answer as `post` gives it: status, Retry-After and body, or why there was none.
    type Answer = Result<(u16, Option<u64>, Vec<u8>), &'static str>;

    /// Delivers against answers given in turn; the result and the pauses taken.
    fn deliver_against(
        answers: Vec<Answer>,
    ) -> (Result<(), Undelivered<&'static str>>, Vec<Duration>) {
        let answers = RefCell::new(answers.into_iter());
        let pauses = RefCell::new(Vec::new());
        let result = now(deliver(
            4,
            || std::future::ready(answers.borrow_mut().next().expect("an answer")),
            |d| {
                pauses.borrow_mut().push(d);
                std::future::ready(())
            },
        ));
        (result, pauses.into_inner())
    }

    #[test]
    fn delivery_retries_only_where_the_spec_allows() {
        let ok = |s| Ok((s, None, Vec::new()));
        let (r, pauses) = deliver_against(vec![ok(503), Ok((429, Some(1), vec![])), ok(200)]);
        assert_eq!(r, Ok(()));
        assert_eq!(pauses, [Duration::from_millis(200), Duration::from_secs(1)]);
        let (r, pauses) = deliver_against(vec![Ok((400, None, b"no".to_vec()))]);
        assert_eq!(
            r,
            Err(Undelivered::Refused {
                status: 400,
                body: "no".into()
            })
        );
        assert!(pauses.is_empty());
        let (r, pauses) = deliver_against(vec![ok(503), ok(503), ok(503), ok(503)]);
        assert!(matches!(r, Err(Undelivered::Refused { status: 503, .. })));
        assert_eq!(pauses.len(), 3, "four attempts, three pauses");
        let (r, _) = deliver_against(vec![Err("connection refused")]);
        assert_eq!(r, Err(Undelivered::Unreachable("connection refused")));
        let partial = br#"{"partialSuccess":{"rejectedSpans":"1"}}"#.to_vec();
        let (r, _) = deliver_against(vec![Ok((200, None, partial))]);
        assert!(matches!(r, Err(Undelivered::Partial { rejected: 1, .. })));
    }

    #[test]
    fn exporter_headers_are_read_as_the_spec_writes_them() {
        assert_eq!(
            parse_headers("Authorization=Bearer%20abc, x-tenant = blue,broken,=x"),
            vec![
                ("Authorization".to_string(), "Bearer abc".to_string()),
                ("x-tenant".to_string(), "blue".to_string()),
            ]
        );
        assert_eq!(parse_headers("a=100%"), vec![("a".into(), "100%".into())]);
        assert_eq!(parse_headers("a=%4"), vec![("a".into(), "%4".into())]);
    }

    #[test]
    fn partial_success_is_not_success() {
        assert_eq!(verdict(200, b""), Verdict::Accepted);
        assert_eq!(verdict(200, b"{}"), Verdict::Accepted);
        assert_eq!(verdict(200, br#"{"partialSuccess":{}}"#), Verdict::Accepted);
        assert_eq!(
            verdict(
                200,
                br#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"bad ids"}}"#
            ),
            Verdict::Partial {
                rejected: 2,
                message: "bad ids".into()
            }
        );
        assert_eq!(
            verdict(200, br#"{"partialSuccess":{"rejectedSpans":3}}"#),
            Verdict::Partial {
                rejected: 3,
                message: String::new()
            }
        );
    }

    #[test]
    fn only_the_specs_statuses_are_retried() {
        for s in [429, 502, 503, 504] {
            assert_eq!(verdict(s, b""), Verdict::Retry, "{s}");
        }
        assert_eq!(
            verdict(400, b"bad"),
            Verdict::Refused {
                status: 400,
                body: "bad".into()
            }
        );
        assert!(matches!(
            verdict(500, b""),
            Verdict::Refused { status: 500, .. }
        ));
        assert_eq!(retry_pause(1, None), Duration::from_millis(200));
        assert_eq!(retry_pause(3, None), Duration::from_millis(800));
        assert_eq!(retry_pause(1, Some(2)), Duration::from_secs(2));
        assert_eq!(retry_pause(1, Some(60)), Duration::from_secs(5));
    }
}
