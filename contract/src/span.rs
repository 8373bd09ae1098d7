//! The span format: one finished span, shaped like an OpenTelemetry span, as the store keeps it,
//! `msctl trace --json` prints it, and a service run by hand writes it to its JSON-lines file
//! (docs/spans.md).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

pub const KIND_SERVER: u8 = 2;
pub const KIND_CLIENT: u8 = 3;

/// One finished span, one line of `traces/<instance>.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: u8,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status: SpanStatus,
    pub attributes: Map<String, Value>,
    pub resource: Resource,
    /// Moments within the span, such as a fault `msctl fault` injected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SpanEvent>,
    /// The W3C `tracestate` the span was made in; a sampled trace's weight is there (`ot=th`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanEvent {
    pub name: String,
    pub time_unix_nano: u64,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanStatus {
    /// 0 unset, 1 ok, 2 error.
    pub code: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    #[serde(rename = "service.name")]
    pub service_name: String,
    #[serde(rename = "service.instance.id")]
    pub service_instance_id: String,
}

impl SpanStatus {
    /// A client span's status from how its call ended, with the matching attributes: a status
    /// code, or an `error.type` for an answer of 400 or more or a call that got no answer.
    pub fn of_call(
        attributes: &mut Map<String, Value>,
        outcome: Result<u16, (&str, String)>,
    ) -> Self {
        match outcome {
            Ok(code) => {
                attributes.insert("http.response.status_code".into(), Value::from(code));
                if code >= 400 {
                    attributes.insert("error.type".into(), Value::from(code.to_string()));
                    Self {
                        code: 2,
                        message: None,
                    }
                } else {
                    Self {
                        code: 0,
                        message: None,
                    }
                }
            }
            Err((error_type, message)) => {
                attributes.insert("error.type".into(), Value::from(error_type));
                Self {
                    code: 2,
                    message: Some(message),
                }
            }
        }
    }
}

pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}
