//! The kit's `tracing` layer: a service's own `tracing` spans become child spans of the request
//! they run in (so a handler's `info_span!` and its database queries show in `msctl trace`),
//! and its `tracing` events become the kit's JSON log lines, filtered by `RUST_LOG` and carrying
//! the trace and span ids of the request they were written in.

use crate::log;
use crate::span::{Span as Record, SpanStatus, Tracer, unix_nanos};
use crate::trace_context::{NewIds, TraceParent};
use serde_json::{Map, Value};
use std::time::SystemTime;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as Values};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// OpenTelemetry's span kind for work inside a service.
const KIND_INTERNAL: u8 = 1;

/// What the layer keeps on each span: its place in the trace, and what it will record.
#[derive(Debug, Clone)]
struct Node {
    trace: TraceParent,
    parent: Option<String>,
    /// The kit records server spans itself; only the others are recorded here.
    record: bool,
    name: String,
    started: SystemTime,
    attributes: Map<String, Value>,
    error: Option<String>,
}

pub struct KitLayer {
    tracer: Tracer,
    filter: EnvFilter,
}

impl KitLayer {
    /// Records spans with `tracer`; log events pass when `RUST_LOG` (default `info`) lets them.
    pub fn new(tracer: Tracer) -> Self {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        Self { tracer, filter }
    }
}

/// Marks `span` as the server span of the request with context `trace`, so spans opened inside
/// the handler are its children; the kit records the server span itself.
pub fn set_request_context(span: &tracing::Span, trace: TraceParent) {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>();
        if let Some(data) = registry.and_then(|r| r.span(id))
            && let Some(node) = data.extensions_mut().get_mut::<Node>()
        {
            node.trace = trace;
            node.record = false;
        }
    });
}

/// Field values as JSON; `message` apart, `otel.name` and `error` noted.
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

impl<S> Layer<S> for KitLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Node>().map(|n| n.trace));
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let name = fields
            .0
            .remove("otel.name")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| attrs.metadata().name().to_string());
        let node = Node {
            // Outside any request a span starts a trace of its own.
            trace: parent
                .map(|p| p.child())
                .unwrap_or_else(TraceParent::new_root),
            parent: parent.map(|p| p.span_id_hex()),
            record: true,
            name,
            started: SystemTime::now(),
            attributes: fields.0,
            error: None,
        };
        span.extensions_mut().insert(node);
    }

    fn on_record(&self, id: &Id, values: &Values<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(node) = span.extensions_mut().get_mut::<Node>() {
            if let Some(error) = fields.0.remove("error") {
                node.error = Some(error.as_str().unwrap_or_default().to_string());
            }
            node.attributes.extend(fields.0);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Static directives (`info`, `users=debug`) decide from the metadata alone.
        if !Layer::<S>::enabled(&self.filter, event.metadata(), ctx.clone()) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let msg = fields
            .0
            .remove("message")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if let Some(node) = ctx
            .event_span(event)
            .and_then(|s| s.extensions().get::<Node>().cloned())
        {
            fields
                .0
                .insert("trace_id".into(), node.trace.trace_id_hex().into());
            fields
                .0
                .insert("span_id".into(), node.trace.span_id_hex().into());
        }
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        log::line(&level, &msg, Value::Object(fields.0));
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(node) = span.extensions_mut().remove::<Node>() else {
            return;
        };
        if !node.record || !self.tracer.is_enabled() {
            return;
        }
        let start = unix_nanos(node.started);
        let end = unix_nanos(SystemTime::now()).max(start);
        self.tracer.record(Record {
            trace_id: node.trace.trace_id_hex(),
            span_id: node.trace.span_id_hex(),
            parent_span_id: node.parent,
            name: node.name,
            kind: KIND_INTERNAL,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            status: match node.error {
                Some(message) => SpanStatus {
                    code: 2,
                    message: Some(message),
                },
                None => SpanStatus {
                    code: 0,
                    message: None,
                },
            },
            attributes: node.attributes,
            resource: self.tracer.resource().clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[tokio::test]
    async fn spans_inside_a_request_are_its_children_and_events_carry_its_ids() {
        let dir = tempfile::tempdir().unwrap();
        let tracer = Tracer::start(Some(dir.path()), None, "s", "s-1").unwrap();
        let subscriber = tracing_subscriber::registry().with(KitLayer::new(tracer.clone()));
        let request = TraceParent::new_root();
        tracing::subscriber::with_default(subscriber, || {
            let server = tracing::info_span!("server");
            set_request_context(&server, request);
            let _in = server.enter();
            let query = tracing::info_span!(
                "db",
                otel.name = "SELECT users",
                db.system.name = "sqlite",
                db.operation.name = "SELECT"
            );
            query.in_scope(|| tracing::info!(rows = 1, "queried"));
        });
        tracer.flush(std::time::Duration::from_secs(5)).await;
        let text = std::fs::read_to_string(dir.path().join("s-1.jsonl")).unwrap();
        let spans: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            spans.len(),
            1,
            "the server span is the kit's to record: {text}"
        );
        let db = &spans[0];
        assert_eq!(db.name, "SELECT users");
        assert_eq!(db.trace_id, request.trace_id_hex());
        assert_eq!(
            db.parent_span_id.as_deref(),
            Some(request.span_id_hex().as_str())
        );
        assert_eq!(db.attributes["db.system.name"], "sqlite");
        assert_eq!(db.kind, KIND_INTERNAL);
    }
}
