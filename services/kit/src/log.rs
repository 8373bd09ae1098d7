//! Structured log lines on stdout: every `tracing` event a service writes, one JSON object a
//! line, so that `msctl logs` and scripts can parse them. A line written inside a request
//! carries the `trace_id` and `span_id` of the span it was written in.

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use std::io::Write;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The `tracing` layer that writes the lines.
pub struct JsonLines {
    service: String,
    instance: String,
}

impl JsonLines {
    pub fn new(service: &str, instance: &str) -> Self {
        Self {
            service: service.to_string(),
            instance: instance.to_string(),
        }
    }
}

/// An event's fields as JSON values.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
}

impl<S: Subscriber> Layer<S> for JsonLines {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let msg = match fields.0.remove("message") {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        // The span the event was written in is the active OpenTelemetry context: tracing
        // activates it on entry.
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let sc = span.span_context();
        if sc.is_valid() {
            fields
                .0
                .insert("trace_id".into(), sc.trace_id().to_string().into());
            fields
                .0
                .insert("span_id".into(), sc.span_id().to_string().into());
        }
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        write_line(&level, &self.service, &self.instance, &msg, fields.0);
    }
}

/// Writes one line. Used by the layer, and directly for a failure before the layer is installed.
pub fn write_line(
    level: &str,
    service: &str,
    instance: &str,
    msg: &str,
    fields: Map<String, Value>,
) {
    let mut obj = Map::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    obj.insert("ts_ms".into(), Value::from(now.as_millis() as u64));
    obj.insert("level".into(), Value::from(level));
    if !service.is_empty() {
        obj.insert("service".into(), Value::from(service));
        obj.insert("instance".into(), Value::from(instance));
    }
    obj.insert("msg".into(), Value::from(msg));
    obj.extend(fields);
    let mut out = std::io::stdout().lock();
    // A closed stdout (the supervisor went away) must not take the service down with it.
    let _ = writeln!(out, "{}", Value::Object(obj));
}
