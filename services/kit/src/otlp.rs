//! OpenTelemetry export: spans as an OTLP/HTTP JSON `ExportTraceServiceRequest`, and a sender
//! that posts them, retrying only where the protocol says a retry may succeed.

use crate::span::Span;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// The instrumentation scope every span is reported under.
pub const SCOPE: &str = "msctl-kit";

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

fn attributes(map: &Map<String, Value>) -> Vec<Value> {
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

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the OTLP receiver at {url} could not be reached: {message}")]
    Unreachable { url: String, message: String },
    #[error("the OTLP receiver at {url} answered {status}: {body}")]
    Rejected {
        url: String,
        status: u16,
        body: String,
    },
}

/// Statuses after which the OTLP spec allows a retry.
fn retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// Posts `spans` to `url` (a full `/v1/traces` URL), retrying up to `attempts` times on 429,
/// 502, 503 and 504, with a doubling pause or the receiver's `Retry-After`.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    spans: &[Span],
    attempts: u32,
) -> Result<(), ExportError> {
    let body = serde_json::to_vec(&export_request(spans)).unwrap_or_default();
    let mut pause = Duration::from_millis(200);
    for attempt in 1..=attempts.max(1) {
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| ExportError::Unreachable {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        if !retryable(status) || attempt == attempts.max(1) {
            return Err(ExportError::Rejected {
                url: url.to_string(),
                status,
                body: text.chars().take(300).collect(),
            });
        }
        tokio::time::sleep(retry_after.unwrap_or(pause).min(Duration::from_secs(5))).await;
        pause *= 2;
    }
    unreachable!("the loop returns on its last attempt")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{Resource, SpanStatus};

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
