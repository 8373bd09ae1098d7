//! OTLP messages (the `opentelemetry-proto` types) to msctl's flat span and log records: hex ids,
//! attributes as a JSON object, the resource's service and instance picked out.

use msctl_contract::span::{Resource, Span, SpanEvent, SpanStatus};
use msctl_contract::trace_context::hex;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::{Map, Value};

/// One log record as stored: when, in which trace, from which instance, and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub time_unix_nano: u64,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub severity: String,
    pub body: String,
    pub resource: Resource,
    pub attributes: Map<String, Value>,
}

/// Every span of an export request. Spans without a valid trace or span id are left out: they
/// cannot be placed in any trace.
pub fn spans(request: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let resource = resource(rs.resource.map(|r| r.attributes).unwrap_or_default());
        for ss in rs.scope_spans {
            for s in ss.spans {
                if s.trace_id.len() != 16 || s.span_id.len() != 8 {
                    continue;
                }
                let status = s.status.unwrap_or_default();
                out.push(Span {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: (s.parent_span_id.len() == 8).then(|| hex(&s.parent_span_id)),
                    name: s.name,
                    // OTLP counts kinds from 0 (unspecified); so do our files.
                    kind: u8::try_from(s.kind).unwrap_or(0),
                    start_time_unix_nano: s.start_time_unix_nano,
                    end_time_unix_nano: s.end_time_unix_nano.max(s.start_time_unix_nano),
                    status: SpanStatus {
                        code: u8::try_from(status.code).unwrap_or(0),
                        message: (!status.message.is_empty()).then_some(status.message),
                    },
                    attributes: attributes(s.attributes),
                    resource: resource.clone(),
                    events: s
                        .events
                        .into_iter()
                        .map(|e| SpanEvent {
                            name: e.name,
                            time_unix_nano: e.time_unix_nano,
                            attributes: attributes(e.attributes),
                        })
                        .collect(),
                    trace_state: (!s.trace_state.is_empty()).then_some(s.trace_state),
                });
            }
        }
    }
    out
}

/// Every log record of an export request.
pub fn logs(request: ExportLogsServiceRequest) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for rl in request.resource_logs {
        let resource = resource(rl.resource.map(|r| r.attributes).unwrap_or_default());
        for sl in rl.scope_logs {
            for l in sl.log_records {
                let time = if l.time_unix_nano > 0 {
                    l.time_unix_nano
                } else {
                    l.observed_time_unix_nano
                };
                out.push(LogRecord {
                    time_unix_nano: time,
                    trace_id: (l.trace_id.len() == 16).then(|| hex(&l.trace_id)),
                    span_id: (l.span_id.len() == 8).then(|| hex(&l.span_id)),
                    severity: if l.severity_text.is_empty() {
                        severity_name(l.severity_number).to_string()
                    } else {
                        l.severity_text
                    },
                    body: l.body.map(|b| text(&b)).unwrap_or_default(),
                    resource: resource.clone(),
                    attributes: attributes(l.attributes),
                });
            }
        }
    }
    out
}

fn resource(attributes: Vec<KeyValue>) -> Resource {
    let attrs = self::attributes(attributes);
    let get = |k: &str| attrs.get(k).and_then(Value::as_str).map(str::to_string);
    let service_name = get("service.name").unwrap_or_else(|| "unknown_service".into());
    Resource {
        service_instance_id: get("service.instance.id").unwrap_or_else(|| service_name.clone()),
        service_name,
    }
}

fn attributes(list: Vec<KeyValue>) -> Map<String, Value> {
    list.into_iter()
        .filter_map(|kv| Some((kv.key, json(&kv.value?))))
        .collect()
}

fn json(v: &AnyValue) -> Value {
    use any_value::Value as V;
    match &v.value {
        Some(V::StringValue(s)) => Value::from(s.as_str()),
        Some(V::BoolValue(b)) => Value::from(*b),
        Some(V::IntValue(i)) => Value::from(*i),
        Some(V::DoubleValue(d)) => Value::from(*d),
        Some(V::ArrayValue(a)) => Value::Array(a.values.iter().map(json).collect()),
        Some(V::KvlistValue(kv)) => Value::Object(attributes(kv.values.clone())),
        Some(V::BytesValue(b)) => Value::from(hex(b)),
        Some(V::StringValueStrindex(i)) => Value::from(*i),
        None => Value::Null,
    }
}

/// A log body as text: strings as they are, anything else as JSON.
fn text(v: &AnyValue) -> String {
    match json(v) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// OTLP severity numbers (1-24) in words.
fn severity_name(n: i32) -> &'static str {
    match n {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_json_as_an_sdk_sends_it_becomes_spans() {
        let body = r#"{"resourceSpans":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"billing"}},
            {"key":"service.instance.id","value":{"stringValue":"billing-1"}}]},
          "scopeSpans":[{"scope":{"name":"opentelemetry.instrumentation.fastapi"},"spans":[
            {"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7",
             "parentSpanId":"1111111111111111","name":"GET /hello","kind":2,
             "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000100000000",
             "attributes":[{"key":"http.response.status_code","value":{"intValue":"503"}},
                           {"key":"http.route","value":{"stringValue":"/hello"}}],
             "status":{"code":2,"message":"boom"}},
            {"traceId":"","spanId":"00f067aa0ba902b8","name":"no trace"}]}]}]}"#;
        let request: ExportTraceServiceRequest = serde_json::from_str(body).unwrap();
        let spans = spans(request);
        assert_eq!(spans.len(), 1, "a span without a trace id is left out");
        let s = &spans[0];
        assert_eq!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.parent_span_id.as_deref(), Some("1111111111111111"));
        assert_eq!(s.kind, 2);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 100_000_000);
        assert_eq!(s.status.code, 2);
        assert_eq!(s.attributes["http.response.status_code"], 503);
        assert_eq!(s.resource.service_name, "billing");
        assert_eq!(s.resource.service_instance_id, "billing-1");
    }
}
