//! Live OTLP export from a service: spans encoded as OTLP protobuf (the cheapest to make and
//! to read), posted and judged as the contract says (msctl_contract::otlp), retrying only where
//! the protocol says a retry may succeed.

pub use msctl_contract::otlp::{SCOPE, Verdict, export_request, traces_url};
use msctl_contract::otlp::{Undelivered, deliver};
use msctl_contract::span::Span;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};
use prost::Message;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the OTLP receiver at {url} could not be reached: {message}")]
    Unreachable { url: String, message: String },
    #[error("the OTLP receiver at {url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the OTLP receiver at {url} rejected {rejected} span(s): {message}")]
    Partial {
        url: String,
        rejected: u64,
        message: String,
    },
}

/// Posts `spans` to `url` (a full `/v1/traces` URL), making up to `attempts` attempts when the
/// receiver answers 429, 502, 503 or 504.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    spans: &[Span],
    attempts: u32,
) -> Result<(), ExportError> {
    post(client, url, headers, protobuf(spans), attempts).await
}

/// Posts an encoded OTLP protobuf export request to `url`, delivered as the contract says.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    attempts: u32,
) -> Result<(), ExportError> {
    let send = || {
        let mut request = client
            .post(url)
            .header("content-type", "application/x-protobuf");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(body.clone()).timeout(Duration::from_secs(10));
        async move {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let answer = response.bytes().await.unwrap_or_default().to_vec();
            Ok::<_, reqwest::Error>((status, retry_after, answer))
        }
    };
    deliver(attempts, send, tokio::time::sleep)
        .await
        .map_err(|e| match e {
            Undelivered::Unreachable(e) => ExportError::Unreachable {
                url: url.to_string(),
                message: e.to_string(),
            },
            Undelivered::Partial { rejected, message } => ExportError::Partial {
                url: url.to_string(),
                rejected,
                message,
            },
            Undelivered::Refused { status, body } => ExportError::Refused {
                url: url.to_string(),
                status,
                body,
            },
        })
}

/// One log line as the kit exports it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub time_unix_nano: u64,
    pub level: String,
    pub msg: String,
    /// The line's other fields; `trace_id` and `span_id` among them tie it to a span.
    pub fields: serde_json::Map<String, Value>,
}

/// Log lines as an OTLP protobuf logs export request from one instance.
pub fn logs_protobuf(service: &str, instance: &str, lines: &[LogLine]) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let records = lines
        .iter()
        .map(|l| {
            let id = |k: &str| l.fields.get(k).and_then(Value::as_str).map(unhex);
            LogRecord {
                time_unix_nano: l.time_unix_nano,
                observed_time_unix_nano: l.time_unix_nano,
                severity_number: severity_number(&l.level),
                severity_text: l.level.to_ascii_uppercase(),
                body: Some(AnyValue {
                    value: Some(string(&l.msg)),
                }),
                attributes: l
                    .fields
                    .iter()
                    .filter(|(k, _)| *k != "trace_id" && *k != "span_id")
                    .map(|(k, v)| key_value(k, any_value(v)))
                    .collect(),
                trace_id: id("trace_id").unwrap_or_default(),
                span_id: id("span_id").unwrap_or_default(),
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    key_value("service.name", string(service)),
                    key_value("service.instance.id", string(instance)),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: SCOPE.into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// OTLP severity numbers for the kit's levels.
fn severity_number(level: &str) -> i32 {
    match level {
        "trace" => 1,
        "debug" => 5,
        "info" => 9,
        "warn" => 13,
        "error" => 17,
        _ => 0,
    }
}

/// Spans as an OTLP protobuf export request, grouped by resource.
pub fn protobuf(spans: &[Span]) -> Vec<u8> {
    let mut by_resource: BTreeMap<(&str, &str), Vec<_>> = BTreeMap::new();
    for s in spans {
        by_resource
            .entry((
                s.resource.service_name.as_str(),
                s.resource.service_instance_id.as_str(),
            ))
            .or_default()
            .push(proto_span(s));
    }
    let resource_spans = by_resource
        .into_iter()
        .map(|((service, instance), spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    key_value("service.name", string(service)),
                    key_value("service.instance.id", string(instance)),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: SCOPE.into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
}

fn proto_span(s: &Span) -> opentelemetry_proto::tonic::trace::v1::Span {
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: unhex(&s.trace_id),
        span_id: unhex(&s.span_id),
        parent_span_id: s.parent_span_id.as_deref().map(unhex).unwrap_or_default(),
        name: s.name.clone(),
        kind: i32::from(s.kind),
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: s
            .attributes
            .iter()
            .map(|(k, v)| key_value(k, any_value(v)))
            .collect(),
        status: Some(Status {
            code: i32::from(s.status.code),
            message: s.status.message.clone().unwrap_or_default(),
        }),
        ..Default::default()
    }
}

fn key_value(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string(s: &str) -> any_value::Value {
    any_value::Value::StringValue(s.into())
}

fn any_value(v: &Value) -> any_value::Value {
    match v {
        Value::String(s) => string(s),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or_default()),
        },
        other => string(&other.to_string()),
    }
}

/// Lowercase hex to bytes; ids are always well-formed here, since the kit made them.
fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use msctl_contract::span::{Resource as SpanResource, SpanStatus};

    #[test]
    fn spans_encode_as_otlp_protobuf() {
        let mut attributes = serde_json::Map::new();
        attributes.insert("http.response.status_code".into(), 503.into());
        attributes.insert("http.route".into(), "/users/{id}".into());
        let span = Span {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            parent_span_id: Some("1111111111111111".into()),
            name: "GET /users/{id}".into(),
            kind: 2,
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            status: SpanStatus {
                code: 2,
                message: Some("Service Unavailable".into()),
            },
            attributes,
            resource: SpanResource {
                service_name: "users".into(),
                service_instance_id: "users-1".into(),
            },
        };
        let decoded = ExportTraceServiceRequest::decode(&protobuf(&[span])[..]).unwrap();
        let rs = &decoded.resource_spans[0];
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!(s.trace_id, unhex("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(s.trace_id.len(), 16);
        assert_eq!(s.parent_span_id.len(), 8);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        assert!(
            s.attributes
                .iter()
                .any(|kv| kv.key == "http.response.status_code"
                    && kv.value.as_ref().unwrap().value == Some(any_value::Value::IntValue(503)))
        );
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes[0],
            key_value("service.name", string("users"))
        );
    }
}
