//! `msctl events`: the message bus as the traces tell it. Each event is followed by its id
//! through the spans the publisher, the relay and the consumers record (`create`, `send`,
//! `process`, in OpenTelemetry's messaging conventions): pending while only its outbox holds it,
//! relayed once the broker has it, then applied (or failed) by each consumer.

use crate::cli::EventsArgs;
use crate::cmd::Context;
use crate::table;
use crate::telemetry::store::Store;
use msctl_contract::span::Span;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// How many bus spans are read to find the newest events.
const SPANS_READ: usize = 5_000;
const POLL: Duration = Duration::from_millis(300);

/// Where an event is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventView {
    pub id: String,
    pub subject: String,
    /// When it was committed (its `create` span), or first seen.
    pub at_ns: u64,
    pub publisher: String,
    /// `pending`, `relayed`, `applied`, `failed`
    pub state: &'static str,
    /// The consumers that applied it; those that failed to.
    pub applied_by: Vec<String>,
    pub failed_in: Vec<String>,
    /// From commit to the last consumer's end.
    pub delay_ms: Option<f64>,
    pub trace_id: String,
}

impl EventView {
    fn state_text(&self) -> String {
        match self.state {
            "applied" => format!("applied by {}", self.applied_by.join(", ")),
            "failed" => format!("failed in {}", self.failed_in.join(", ")),
            other => other.to_string(),
        }
    }
}

/// Events from bus spans, oldest first.
pub fn events_of(spans: &[Span]) -> Vec<EventView> {
    let mut by_id: BTreeMap<String, EventView> = BTreeMap::new();
    let attr = |s: &Span, k: &str| {
        s.attributes
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    // Oldest first, so that a create is seen before what follows it.
    let mut spans: Vec<&Span> = spans.iter().collect();
    spans.sort_by_key(|s| s.start_time_unix_nano);
    for s in spans {
        let id = attr(s, "messaging.message.id");
        if id.is_empty() {
            continue;
        }
        let e = by_id.entry(id.clone()).or_insert_with(|| EventView {
            id,
            subject: attr(s, "messaging.destination.name"),
            at_ns: s.start_time_unix_nano,
            publisher: String::new(),
            state: "pending",
            applied_by: vec![],
            failed_in: vec![],
            delay_ms: None,
            trace_id: s.trace_id.clone(),
        });
        let service = s.resource.service_name.clone();
        match attr(s, "messaging.operation.type").as_str() {
            "create" => {
                e.publisher = service;
                e.at_ns = s.start_time_unix_nano;
            }
            "send" | "publish" => {
                if e.publisher.is_empty() {
                    e.publisher = service;
                }
                if e.state == "pending" {
                    e.state = "relayed";
                }
            }
            "process" | "receive" => {
                let failed = s.status.code == 2;
                let list = if failed {
                    &mut e.failed_in
                } else {
                    &mut e.applied_by
                };
                if !list.contains(&service) {
                    list.push(service);
                }
                e.state = if e.applied_by.is_empty() {
                    "failed"
                } else {
                    "applied"
                };
                let end = s.end_time_unix_nano.saturating_sub(e.at_ns);
                e.delay_ms = Some(end as f64 / 1e6);
            }
            _ => {}
        }
    }
    let mut events: Vec<EventView> = by_id.into_values().collect();
    events.sort_by_key(|e| e.at_ns);
    events
}

/// Whether `subject` matches `pattern` as NATS matches them: `*` is one token, a final `>`
/// the rest.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

fn read(project: &crate::project::Project, args: &EventsArgs) -> Vec<EventView> {
    let spans = Store::open_read(&project.telemetry_db())
        .and_then(|s| s.message_spans(SPANS_READ).ok())
        .unwrap_or_default();
    let mut events: Vec<EventView> = events_of(&spans)
        .into_iter()
        .filter(|e| {
            args.subject
                .as_deref()
                .is_none_or(|p| subject_matches(p, &e.subject))
        })
        .collect();
    let skip = events.len().saturating_sub(args.limit);
    events.drain(..skip);
    events
}

fn row(e: &EventView) -> Vec<String> {
    vec![
        crate::traces::clock(e.at_ns),
        e.subject.clone(),
        e.id.chars().take(12).collect(),
        e.publisher.clone(),
        e.state_text(),
        e.delay_ms
            .map(|d| format!("{d:.1} ms"))
            .unwrap_or_else(|| "-".into()),
        e.trace_id.clone(),
    ]
}

const HEADERS: [&str; 7] = [
    "TIME", "SUBJECT", "EVENT", "FROM", "STATE", "DELAY", "TRACE",
];

pub async fn events(ctx: &Context, args: EventsArgs) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    crate::traces::check_store(&project)?;
    let events = read(&project, &args);
    if !args.follow {
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&events)?)?;
        } else if events.is_empty() {
            say!(
                "no events recorded{}; services publish through the kit's outbox (the sample's users does on `msctl call DELETE users/2`)",
                args.subject
                    .as_ref()
                    .map(|s| format!(" on `{s}`"))
                    .unwrap_or_default()
            );
        } else {
            let rows: Vec<Vec<String>> = events.iter().map(row).collect();
            outln!("{}", table::render(&HEADERS, &rows))?;
        }
        return Ok(0);
    }
    // Following: a line each time an event appears or moves on.
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    loop {
        for e in read(&project, &args) {
            let state = e.state_text();
            if shown.get(&e.id) == Some(&state) {
                continue;
            }
            if args.json {
                outln!("{}", serde_json::to_string(&e)?)?;
            } else {
                outln!("{}", row(&e).join("  "))?;
            }
            shown.insert(e.id.clone(), state);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
        if crate::output::reader_gone() {
            return Ok(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msctl_contract::span::{Resource, SpanStatus};

    fn span(op: &str, kind: u8, service: &str, id: &str, start: u64, failed: bool) -> Span {
        let mut attributes = serde_json::Map::new();
        attributes.insert("messaging.system".into(), "nats".into());
        attributes.insert("messaging.operation.type".into(), op.into());
        attributes.insert("messaging.destination.name".into(), "user.deleted".into());
        attributes.insert("messaging.message.id".into(), id.into());
        Span {
            trace_id: format!("t-{id}"),
            span_id: format!("{op}-{id}"),
            parent_span_id: None,
            name: format!("{op} user.deleted"),
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000_000,
            status: SpanStatus {
                code: if failed { 2 } else { 0 },
                message: None,
            },
            attributes,
            resource: Resource {
                service_name: service.into(),
                service_instance_id: format!("{service}-1"),
            },
            events: vec![],
            trace_state: None,
        }
    }

    #[test]
    fn an_event_moves_from_pending_to_relayed_to_applied() {
        let spans = vec![
            span("create", 4, "users", "a", 1_000_000_000, false),
            span("create", 4, "users", "b", 2_000_000_000, false),
            span("send", 4, "users", "b", 2_100_000_000, false),
            span("create", 4, "users", "c", 3_000_000_000, false),
            span("send", 4, "users", "c", 3_001_000_000, false),
            span("process", 5, "posts", "c", 3_002_000_000, false),
            span("create", 4, "users", "d", 4_000_000_000, false),
            span("send", 4, "users", "d", 4_001_000_000, false),
            span("process", 5, "posts", "d", 4_002_000_000, true),
        ];
        let events = events_of(&spans);
        let states: Vec<(&str, String)> = events
            .iter()
            .map(|e| (e.id.as_str(), e.state_text()))
            .collect();
        assert_eq!(
            states,
            [
                ("a", "pending".to_string()),
                ("b", "relayed".to_string()),
                ("c", "applied by posts".to_string()),
                ("d", "failed in posts".to_string()),
            ]
        );
        assert_eq!(events[2].publisher, "users");
        assert_eq!(events[2].delay_ms, Some(3.0));
        assert_eq!(events[0].trace_id, "t-a");
    }

    #[test]
    fn subjects_match_as_nats_matches_them() {
        assert!(subject_matches("user.deleted", "user.deleted"));
        assert!(subject_matches("user.*", "user.deleted"));
        assert!(subject_matches("user.>", "user.deleted.soft"));
        assert!(!subject_matches("user.*", "user.deleted.soft"));
        assert!(!subject_matches("user", "user.deleted"));
        assert!(!subject_matches("order.*", "user.deleted"));
    }
}
