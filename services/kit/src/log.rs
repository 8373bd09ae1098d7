//! Structured log lines on stdout: every `tracing` event a service writes, one JSON object a
//! line, so that `msctl logs` and scripts can parse them. A line written inside a request
//! carries the `trace_id` and `span_id` of the span it was written in.
//!
//! A request only appends its line to a buffer. One writer thread writes the buffer out a few
//! milliseconds after its first line, so that under load a batch of lines costs one `write` and
//! one wake-up of the supervisor that reads the pipe, instead of one each per line (the profile
//! of a loaded service showed those per-line writes and thread wake-ups as its largest cost).

use msctl_contract::trace_context::hex;
use opentelemetry::trace::TraceContextExt;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How long the writer lets lines gather after the first one of a batch.
const GATHER: Duration = Duration::from_millis(5);

/// Bytes buffered before a request waits for the writer. Waiting, not dropping: no line is
/// lost, and the bound keeps a stalled reader from growing the service's memory.
const BUFFERED: usize = 512 * 1024;

/// The keys every line has; an event's own field of the same name is left out.
const RESERVED: [&str; 7] = [
    "ts_ms", "level", "service", "instance", "msg", "trace_id", "span_id",
];

/// The `tracing` layer that writes the lines.
pub struct JsonLines {
    service: String,
    instance: String,
    out: Arc<Sink>,
}

impl JsonLines {
    /// The layer, and the guard that writes out buffered lines when dropped: keep it for the
    /// life of the process.
    pub fn stdout(service: &str, instance: &str) -> (Self, LinesGuard) {
        let (out, guard) = Sink::start(Box::new(std::io::stdout()));
        let layer = Self {
            service: service.to_string(),
            instance: instance.to_string(),
            out,
        };
        (layer, guard)
    }
}

/// The buffer between requests and the writer thread.
struct Sink {
    state: Mutex<Buffered>,
    /// Signalled when a batch starts (for the writer) and when one is taken (for requests
    /// waiting for room).
    changed: Condvar,
}

#[derive(Default)]
struct Buffered {
    lines: Vec<u8>,
    closing: bool,
}

impl Sink {
    fn start(out: Box<dyn Write + Send>) -> (Arc<Self>, LinesGuard) {
        let sink = Arc::new(Self {
            state: Mutex::new(Buffered::default()),
            changed: Condvar::new(),
        });
        let writer = sink.clone();
        let thread = std::thread::Builder::new()
            .name("msctl-kit-log".into())
            .spawn(move || writer.write_out(out))
            .expect("the log writer thread starts");
        let guard = LinesGuard {
            sink: sink.clone(),
            thread: Some(thread),
        };
        (sink, guard)
    }

    fn lock(&self) -> MutexGuard<'_, Buffered> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, line: &[u8]) {
        let mut state = self.lock();
        while state.lines.len() >= BUFFERED && !state.closing {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        let first = state.lines.is_empty();
        state.lines.extend_from_slice(line);
        drop(state);
        if first {
            self.changed.notify_all();
        }
    }

    /// The writer thread: sleeps until a batch starts, lets it gather, writes it in one go.
    fn write_out(&self, mut out: Box<dyn Write + Send>) {
        let mut spare = Vec::new();
        loop {
            let mut state = self.lock();
            while state.lines.is_empty() && !state.closing {
                state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if !state.closing {
                drop(state);
                std::thread::sleep(GATHER);
                state = self.lock();
            }
            std::mem::swap(&mut state.lines, &mut spare);
            let closing = state.closing;
            drop(state);
            self.changed.notify_all();
            // A closed stdout (the supervisor went away) must not take the service down, nor
            // make the buffer grow: the batch is dropped.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
            if closing && self.lock().lines.is_empty() {
                return;
            }
        }
    }
}

/// Writes out what is buffered when the process's telemetry goes.
pub struct LinesGuard {
    sink: Arc<Sink>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for LinesGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinesGuard")
    }
}

impl Drop for LinesGuard {
    fn drop(&mut self) {
        self.sink.lock().closing = true;
        self.sink.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An event's fields, in the order written.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: Vec<(&'static str, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else if !RESERVED.contains(&field.name()) {
            self.rest.push((field.name(), value));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
}

impl<S: Subscriber> Layer<S> for JsonLines {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        // The span the event was written in is the active OpenTelemetry context: tracing
        // activates it on entry.
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let sc = span.span_context();
        let ids = sc.is_valid().then(|| {
            (
                hex(&sc.trace_id().to_bytes()),
                hex(&sc.span_id().to_bytes()),
            )
        });
        let line = Line {
            level: level_name(event.metadata().level()),
            service: &self.service,
            instance: &self.instance,
            msg: fields.message.as_deref().unwrap_or_default(),
            ids: ids.as_ref().map(|(t, s)| (t.as_str(), s.as_str())),
            fields: &fields.rest,
        };
        self.out.push(&line.to_bytes());
    }
}

/// One line, serialised as it stands, with no intermediate map.
struct Line<'a> {
    level: &'a str,
    service: &'a str,
    instance: &'a str,
    msg: &'a str,
    ids: Option<(&'a str, &'a str)>,
    fields: &'a [(&'static str, Value)],
}

impl Line<'_> {
    fn to_bytes(&self) -> Vec<u8> {
        let ts_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut out = Vec::with_capacity(192);
        let mut ser = serde_json::Serializer::new(&mut out);
        // Writing to a Vec cannot fail, and every value here serialises.
        let _ = (|| {
            let mut map = ser.serialize_map(None)?;
            map.serialize_entry("ts_ms", &ts_ms)?;
            map.serialize_entry("level", self.level)?;
            if !self.service.is_empty() {
                map.serialize_entry("service", self.service)?;
                map.serialize_entry("instance", self.instance)?;
            }
            map.serialize_entry("msg", self.msg)?;
            for (k, v) in self.fields {
                map.serialize_entry(k, v)?;
            }
            if let Some((trace, span)) = self.ids {
                map.serialize_entry("trace_id", trace)?;
                map.serialize_entry("span_id", span)?;
            }
            map.end()
        })();
        out.push(b'\n');
        out
    }
}

/// A level as the lines spell it: `info`, not `INFO`.
fn level_name(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG => "debug",
        tracing::Level::TRACE => "trace",
    }
}

/// Writes one line straight to stdout: for a failure before the layer is installed.
pub fn write_line(level: &str, service: &str, instance: &str, msg: &str) {
    let line = Line {
        level,
        service,
        instance,
        msg,
        ids: None,
        fields: &[],
    };
    // A closed stdout (the supervisor went away) must not take the service down with it.
    let _ = std::io::stdout().lock().write_all(&line.to_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back, or one whose reader has gone.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>, bool);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.1 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_from_every_thread_is_written_once_in_its_order() {
        let out = Shared::default();
        let (sink, guard) = Sink::start(Box::new(out.clone()));
        // More than the buffer holds, so that writers also wait for room.
        let per_thread = 2 * BUFFERED / 16;
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        sink.push(format!("{t} {i:>9}\n").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let (t, i) = line.split_once(' ').unwrap();
            let t: usize = t.parse().unwrap();
            assert_eq!(i.trim().parse::<usize>().unwrap(), next[t], "thread {t}");
            next[t] += 1;
        }
        assert_eq!(next, [per_thread; 4]);
    }

    #[test]
    fn a_closed_pipe_neither_blocks_nor_grows_the_buffer() {
        let (sink, guard) = Sink::start(Box::new(Shared(Default::default(), true)));
        for _ in 0..4 * BUFFERED / 64 {
            sink.push(&[b'x'; 64]);
        }
        assert!(sink.lock().lines.len() <= BUFFERED + 64);
        drop(guard);
    }

    #[test]
    fn a_line_is_one_json_object_with_the_fixed_keys_first() {
        let fields = [
            ("user_id", Value::from(7)),
            ("why", Value::from("a \"quoted\"\nword")),
        ];
        let line = Line {
            level: level_name(&tracing::Level::INFO),
            service: "users",
            instance: "users-2",
            msg: "user created",
            ids: Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")),
            fields: &fields,
        }
        .to_bytes();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["level"], "info");
        assert_eq!(v["service"], "users");
        assert_eq!(v["instance"], "users-2");
        assert_eq!(v["msg"], "user created");
        assert_eq!(v["user_id"], 7);
        assert_eq!(v["why"], "a \"quoted\"\nword");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(v["ts_ms"].as_u64().unwrap() > 1_600_000_000_000);
        let text = String::from_utf8(line).unwrap();
        assert!(text.starts_with(r#"{"ts_ms":"#), "{text}");
    }

    #[test]
    fn an_events_field_never_replaces_a_fixed_key() {
        // Recorded from a real event, so that field names come from a callsite.
        use tracing_subscriber::layer::SubscriberExt;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        {
            struct Record(std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>);
            impl<S: Subscriber> Layer<S> for Record {
                fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
                    let mut f = Fields::default();
                    event.record(&mut f);
                    let mut out = self.0.lock().unwrap();
                    out.push(("message".into(), f.message.unwrap_or_default().into()));
                    out.extend(f.rest.into_iter().map(|(k, v)| (k.to_string(), v)));
                }
            }
            let subscriber = tracing_subscriber::registry().with(Record(seen.clone()));
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(level = "spoofed", msg = "spoofed", kept = 1, "real message");
            });
        }
        let callsite_fields = seen.lock().unwrap().clone();
        assert_eq!(
            callsite_fields,
            vec![
                ("message".to_string(), Value::from("real message")),
                ("kept".to_string(), Value::from(1)),
            ]
        );
    }
}
