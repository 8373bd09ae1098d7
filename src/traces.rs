//! Stored traces: the spans in the project's store (`.msctl/telemetry.db`), grouped by trace,
//! with what the listing shows of each.

use crate::project::Project;
use crate::telemetry::convert::LogRecord;
use crate::telemetry::store::{Filter, Store};
use msctl_contract::span::{KIND_SERVER, Span};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// An error for a span store that is there but cannot be read (overwritten, damaged), so that
/// it is not taken for an empty one: "no traces recorded yet" would be wrong.
pub fn check_store(project: &Project) -> Result<(), crate::error::MsctlError> {
    let path = project.telemetry_db();
    match Store::unreadable(&path) {
        None => Ok(()),
        Some(why) => Err(crate::error::MsctlError::Io(format!(
            "the span store {} cannot be read: {why}; a running msctl sets it aside as {}.broken \
             and starts a new one when the next span arrives; with none running, delete it",
            path.display(),
            path.display()
        ))),
    }
}

/// The newest `limit` traces that match `filter` exactly, and whether any trace is stored at
/// all. The store narrows by its per-trace summary; each candidate is then checked in full.
pub fn list(project: &Project, filter: &Filter, limit: usize) -> (Vec<Trace>, bool) {
    let Some(store) = Store::open_read(&project.telemetry_db()) else {
        return (Vec::new(), false);
    };
    let any = !store
        .candidates(&Filter::default(), 1, 0)
        .unwrap_or_default()
        .is_empty();
    let matches = |t: &Trace| {
        filter
            .service
            .as_ref()
            .is_none_or(|s| t.services().contains(s))
            && filter
                .route
                .as_ref()
                .is_none_or(|r| t.route().contains(r.as_str()))
            && (!filter.errors || t.has_error())
            && t.duration().as_nanos() as u64 >= filter.min_duration_ns
    };
    let mut found = Vec::new();
    let page = (limit * 2).max(16);
    let mut offset = 0;
    while found.len() < limit {
        let candidates = store
            .candidate_traces(filter, page, offset)
            .unwrap_or_default();
        let fetched = candidates.len();
        for spans in candidates {
            // A trace numbered twice (its spans came further apart than the store's writer
            // remembers) is listed once, by its newest part.
            if let Some(t) = group(spans)
                .pop()
                .filter(|t| matches(t) && !found.iter().any(|f: &Trace| f.id == t.id))
            {
                found.push(t);
                if found.len() == limit {
                    break;
                }
            }
        }
        if fetched < page {
            break;
        }
        offset += page;
    }
    (found, any)
}

/// The spans of one trace.
pub fn spans_of(project: &Project, trace_id: &str) -> Vec<Span> {
    Store::open_read(&project.telemetry_db())
        .and_then(|s| s.trace(trace_id).ok())
        .unwrap_or_default()
}

/// The log records of one trace, in time order.
pub fn logs_of(project: &Project, trace_id: &str) -> Vec<LogRecord> {
    Store::open_read(&project.telemetry_db())
        .and_then(|s| s.logs_of(trace_id).ok())
        .unwrap_or_default()
}

/// One log record as a line: time of day, level, message, then its attributes as `k=v`.
pub fn log_line(l: &LogRecord) -> String {
    let attrs: Vec<String> = l
        .attributes
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    let mut line = format!("{} {:<5} {}", clock(l.time_unix_nano), l.severity, l.body);
    if !attrs.is_empty() {
        line.push(' ');
        line.push_str(&attrs.join(" "));
    }
    line
}

/// Wall-clock time of day, UTC, to the millisecond: enough to tell recent events apart.
pub fn clock(unix_nanos: u64) -> String {
    let since = Duration::from_nanos(unix_nanos);
    let secs = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60,
        since.subsec_millis()
    )
}

/// Spans the receiver had to drop because the store was behind.
pub fn dropped(project: &Project) -> u64 {
    Store::open_read(&project.telemetry_db())
        .map(|s| s.counter(crate::telemetry::receiver::DROPPED))
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
pub struct Trace {
    pub id: String,
    /// In start order.
    pub spans: Vec<Span>,
}

/// Spans grouped by trace, newest trace first.
pub fn group(spans: Vec<Span>) -> Vec<Trace> {
    let mut by_id: HashMap<String, Vec<Span>> = HashMap::new();
    for span in spans {
        by_id.entry(span.trace_id.clone()).or_default().push(span);
    }
    let mut traces: Vec<Trace> = by_id
        .into_iter()
        .map(|(id, mut spans)| {
            spans.sort_by_key(|s| {
                (
                    s.start_time_unix_nano,
                    std::cmp::Reverse(s.end_time_unix_nano),
                )
            });
            Trace { id, spans }
        })
        .collect();
    traces.sort_by_key(|t| std::cmp::Reverse(t.start()));
    traces
}

impl Trace {
    pub fn start(&self) -> u64 {
        self.spans
            .iter()
            .map(|s| s.start_time_unix_nano)
            .min()
            .unwrap_or(0)
    }

    pub fn end(&self) -> u64 {
        self.spans
            .iter()
            .map(|s| s.end_time_unix_nano)
            .max()
            .unwrap_or(0)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end().saturating_sub(self.start()))
    }

    /// Whether `span`'s parent is in this trace.
    pub fn has_parent(&self, span: &Span) -> bool {
        span.parent_span_id
            .as_ref()
            .is_some_and(|p| self.spans.iter().any(|s| &s.span_id == p))
    }

    /// The outermost span: the earliest one whose parent is not in the trace.
    pub fn root(&self) -> Option<&Span> {
        self.spans.iter().find(|s| !self.has_parent(s))
    }

    /// The first server span: the request as the system saw it (`GET /users/{id}/posts`).
    pub fn entry(&self) -> Option<&Span> {
        self.spans
            .iter()
            .find(|s| s.kind == KIND_SERVER)
            .or_else(|| self.root())
    }

    pub fn route(&self) -> String {
        self.entry().map(|s| s.name.clone()).unwrap_or_default()
    }

    pub fn status(&self) -> Option<u64> {
        self.entry()
            .and_then(|s| s.attributes.get("http.response.status_code"))
            .and_then(Value::as_u64)
    }

    /// Services in the order the trace reached them.
    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for s in &self.spans {
            if !names.contains(&s.resource.service_name) {
                names.push(s.resource.service_name.clone());
            }
        }
        names
    }

    pub fn has_error(&self) -> bool {
        self.spans.iter().any(|s| s.status.code == 2)
    }

    pub fn summary(&self) -> Value {
        json!({
            "trace_id": self.id,
            "start_unix_nano": self.start(),
            "route": self.route(),
            "status": self.status(),
            "duration_ms": self.duration().as_secs_f64() * 1000.0,
            "services": self.services(),
            "spans": self.spans.len(),
            "error": self.has_error(),
        })
    }
}

/// The trace `wanted` names: `last`, a whole id, or a unique prefix of at least 4 characters.
pub fn find(project: &Project, wanted: &str) -> Result<Trace, String> {
    let none_yet = || {
        "no traces recorded yet; make a request, for example `msctl call users/1/posts`".to_string()
    };
    let wanted = wanted.to_ascii_lowercase();
    if wanted != "last" {
        if !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "`{wanted}` is not a trace id: ids are hex digits (0-9, a-f), as `msctl traces` lists them; or give `last`"
            ));
        }
        if wanted.len() < 4 {
            return Err(format!(
                "trace id `{wanted}` is too short; give at least 4 characters, or `last`"
            ));
        }
    }
    let Some(store) = Store::open_read(&project.telemetry_db()) else {
        return Err(none_yet());
    };
    if wanted == "last" {
        let spans = store.recent_spans(1).unwrap_or_default();
        return group(spans).into_iter().next().ok_or_else(none_yet);
    }
    match store.trace_ids(&wanted, 2).unwrap_or_default().as_slice() {
        [one] => Ok(Trace {
            id: one.clone(),
            spans: group(store.trace(one).unwrap_or_default())
                .pop()
                .map(|t| t.spans)
                .unwrap_or_default(),
        }),
        [] => Err(format!("no trace `{wanted}`; `msctl traces` lists them")),
        _ => Err(format!(
            "`{wanted}` matches more than one trace; give more of the id"
        )),
    }
}

/// Trace `id` once the services have exported it (msctl has them do so every 100 ms): read
/// until its span count holds steady, for at most two seconds.
pub async fn settled(project: &Project, id: &str) -> Trace {
    let mut last = 0;
    let mut steady = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let spans = spans_of(project, id);
        steady = if spans.len() == last { steady + 1 } else { 0 };
        last = spans.len();
        if (steady >= 3 && last > 1) || std::time::Instant::now() > deadline {
            let spans = group(spans).pop().map(|t| t.spans).unwrap_or_default();
            return Trace {
                id: id.to_string(),
                spans,
            };
        }
    }
}

/// Whether the trace ended so recently that spans may still be on their way to disk.
pub fn is_fresh(trace: &Trace) -> bool {
    let now = msctl_contract::span::unix_nanos(std::time::SystemTime::now());
    now.saturating_sub(trace.end()) < Duration::from_secs(1).as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use msctl_contract::span::{Resource, SpanStatus};

    fn span(trace: &str, id: &str, start: u64) -> Span {
        Span {
            trace_id: trace.into(),
            span_id: id.into(),
            parent_span_id: None,
            name: "GET /users/{id}".into(),
            kind: KIND_SERVER,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000,
            status: SpanStatus {
                code: 0,
                message: None,
            },
            attributes: serde_json::Map::new(),
            resource: Resource {
                service_name: "users".into(),
                service_instance_id: "users-1".into(),
            },
            events: Vec::new(),
            trace_state: None,
        }
    }

    #[test]
    fn an_id_that_cannot_be_one_is_said_before_the_store_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let project = Project::new(&dir.path().join("msctl.toml"));
        let err = |id: &str| find(&project, id).err().unwrap();
        assert!(
            err("zzzz").starts_with("`zzzz` is not a trace id"),
            "{}",
            err("zzzz")
        );
        assert!(err("ab%_").contains("hex digits"), "{}", err("ab%_"));
        assert!(err("ab").contains("too short"), "{}", err("ab"));
        assert!(err("ABCD1234").starts_with("no traces recorded yet"));
        assert!(err("last").starts_with("no traces recorded yet"));
    }

    #[test]
    fn a_trace_the_store_numbered_twice_is_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let project = Project::new(&dir.path().join("msctl.toml"));
        std::fs::create_dir_all(dir.path().join(".msctl")).unwrap();
        let (a, b) = ("a".repeat(32), "b".repeat(32));
        let now = msctl_contract::span::unix_nanos(std::time::SystemTime::now());
        let mut store = Store::open(&project.telemetry_db()).unwrap();
        store
            .insert_spans(&[
                span(&a, &"1".repeat(16), now),
                span(&b, &"2".repeat(16), now),
            ])
            .unwrap();
        // A writer that starts afresh takes a span that began after it for a new trace's.
        drop(store);
        let mut store = Store::open(&project.telemetry_db()).unwrap();
        store
            .insert_spans(&[span(&a, &"3".repeat(16), now + 3_600_000_000_000)])
            .unwrap();
        let (listed, any) = list(&project, &Filter::default(), 10);
        assert!(any);
        let ids: Vec<&str> = listed.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, [a.as_str(), b.as_str()]);
        assert_eq!(spans_of(&project, &a).len(), 2, "by id, both parts");
    }
}
