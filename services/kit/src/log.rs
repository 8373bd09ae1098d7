//! Structured log lines on stdout: every `tracing` event a service writes, one JSON object a
//! line, so that `msctl logs` and scripts can parse them. A line written inside a request
//! carries the `trace_id` and `span_id` of the span it was written in.
//!
//! A request only appends its line to its thread's buffer. One writer thread writes the buffers
//! out a few milliseconds after a batch's first line, so that under load a batch of lines costs
//! one `write` and one wake-up of the supervisor that reads the pipe, instead of one each per
//! line (the profile of a loaded service showed those per-line writes and thread wake-ups as its
//! largest cost).

use opentelemetry::trace::TraceContextExt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
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

/// The buffers between requests and the writer thread: one a thread, so that requests on two
/// threads never wait on each other for a lock (the profile of a loaded gateway showed that
/// lock's futex calls as a third of its system calls). A thread's lines keep their order;
/// lines of different threads in one batch are written a thread after another.
struct Sink {
    threads: thread_local::ThreadLocal<Mutex<Vec<u8>>>,
    /// Set by the line that starts a batch, cleared by the writer as it takes one.
    pending: AtomicBool,
    closing: AtomicBool,
    writer: OnceLock<std::thread::Thread>,
}

impl Sink {
    fn start(out: Box<dyn Write + Send>) -> (Arc<Self>, LinesGuard) {
        let sink = Arc::new(Self {
            threads: thread_local::ThreadLocal::new(),
            pending: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            writer: OnceLock::new(),
        });
        let writer = sink.clone();
        let thread = std::thread::Builder::new()
            .name("msctl-kit-log".into())
            .spawn(move || writer.write_out(out))
            .expect("the log writer thread starts");
        let _ = sink.writer.set(thread.thread().clone());
        let guard = LinesGuard {
            sink: sink.clone(),
            thread: Some(thread),
        };
        (sink, guard)
    }

    fn wake_writer(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    fn push(&self, line: &[u8]) {
        let mine = self.threads.get_or_default();
        loop {
            let mut lines = lock(mine);
            if lines.len() < BUFFERED || self.closing.load(Ordering::Acquire) {
                lines.extend_from_slice(line);
                break;
            }
            // Full: the writer is behind (a stalled reader). Rare, so waiting by polling is
            // enough.
            drop(lines);
            self.wake_writer();
            std::thread::sleep(Duration::from_millis(1));
        }
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.wake_writer();
        }
    }

    /// Bytes waiting to be written, on every thread.
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.threads.iter().map(|t| lock(t).len()).sum()
    }

    /// The writer thread: sleeps until a batch starts, lets it gather, writes it in one go.
    fn write_out(&self, mut out: Box<dyn Write + Send>) {
        let mut batch = Vec::new();
        loop {
            while !self.pending.load(Ordering::Acquire) && !self.closing.load(Ordering::Acquire) {
                std::thread::park();
            }
            let closing = self.closing.load(Ordering::Acquire);
            if !closing {
                std::thread::sleep(GATHER);
            }
            // Cleared before the take, so that a line written after it starts the next batch.
            self.pending.store(false, Ordering::Release);
            for lines in self.threads.iter() {
                let mut lines = lock(lines);
                batch.extend_from_slice(&lines);
                lines.clear();
            }
            // A closed stdout (the supervisor went away) must not take the service down, nor
            // make the buffers grow: the batch is dropped.
            let wrote = !batch.is_empty();
            if wrote {
                let _ = out.write_all(&batch).and_then(|()| out.flush());
            }
            batch.clear();
            if closing && !wrote {
                return;
            }
        }
    }
}

fn lock(lines: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    lines.lock().unwrap_or_else(|e| e.into_inner())
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
        self.sink.closing.store(true, Ordering::Release);
        self.sink.wake_writer();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An event's fields, written as JSON as they are visited: `rest` holds `,"key":value` for each
/// field but the message. Kept per thread and reused, so that a line costs no allocation.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<u8>,
    /// A value formatted with `Debug` or `Display`, before it is escaped into `rest`.
    scratch: String,
}

impl Fields {
    fn clear(&mut self) {
        self.message.clear();
        self.rest.clear();
    }

    /// Starts the field `field` in `rest`; false for the message and for a reserved key.
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name == "message" || RESERVED.contains(&name) {
            return false;
        }
        self.rest.push(b',');
        json(&mut self.rest, name);
        self.rest.push(b':');
        true
    }

    fn number(&mut self, field: &Field, value: impl serde::Serialize) {
        if self.key(field) {
            json(&mut self.rest, &value);
        }
    }
}

/// Writes `value` as JSON: writing to a Vec cannot fail, and every value here serialises.
fn json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    let _ = serde_json::to_writer(out, value);
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            self.message.clear();
            let _ = write!(self.message, "{value:?}");
        } else if self.key(field) {
            self.scratch.clear();
            let _ = write!(self.scratch, "{value:?}");
            json(&mut self.rest, self.scratch.as_str());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.clear();
            self.message.push_str(value);
        } else if self.key(field) {
            json(&mut self.rest, value);
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.number(field, value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.number(field, value);
    }
}

thread_local! {
    /// The fields and the line being written on this thread.
    static WRITING: std::cell::RefCell<(Fields, Vec<u8>)> = Default::default();
}

impl<S: Subscriber> Layer<S> for JsonLines {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        // An event written while formatting another's value finds this thread's buffers taken,
        // and is written with its own.
        let mut own = None;
        WRITING.with(|writing| {
            let mut taken = writing.try_borrow_mut();
            let (fields, line) = match taken.as_deref_mut() {
                Ok((fields, line)) => (fields, line),
                Err(_) => {
                    let (fields, line) = own.insert((Fields::default(), Vec::new()));
                    (fields, line)
                }
            };
            fields.clear();
            event.record(fields);
            // The span the event was written in is the active OpenTelemetry context: tracing
            // activates it on entry.
            let cx = opentelemetry::Context::current();
            let span = cx.span();
            let sc = span.span_context();
            let ids = sc
                .is_valid()
                .then(|| (sc.trace_id().to_bytes(), sc.span_id().to_bytes()));
            line.clear();
            Line {
                level: level_name(event.metadata().level()),
                service: &self.service,
                instance: &self.instance,
                msg: &fields.message,
                ids: ids.as_ref().map(|(t, s)| (&t[..], &s[..])),
                fields: &fields.rest,
            }
            .write_to(line);
            self.out.push(line);
        });
    }
}

/// One line, written as it stands, with no intermediate map.
struct Line<'a> {
    level: &'a str,
    service: &'a str,
    instance: &'a str,
    msg: &'a str,
    /// The trace and span ids, as bytes.
    ids: Option<(&'a [u8], &'a [u8])>,
    /// `,"key":value` for each field, already JSON.
    fields: &'a [u8],
}

impl Line<'_> {
    fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let ts_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let _ = write!(out, "{{\"ts_ms\":{ts_ms},\"level\":");
        json(out, self.level);
        if !self.service.is_empty() {
            out.extend_from_slice(b",\"service\":");
            json(out, self.service);
            out.extend_from_slice(b",\"instance\":");
            json(out, self.instance);
        }
        out.extend_from_slice(b",\"msg\":");
        json(out, self.msg);
        out.extend_from_slice(self.fields);
        if let Some((trace, span)) = self.ids {
            out.extend_from_slice(b",\"trace_id\":\"");
            hex_into(out, trace);
            out.extend_from_slice(b"\",\"span_id\":\"");
            hex_into(out, span);
            out.push(b'"');
        }
        out.extend_from_slice(b"}\n");
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(192);
        self.write_to(&mut out);
        out
    }
}

/// `bytes` in lowercase hex, as trace context writes ids.
fn hex_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
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
        fields: b"",
    };
    // A closed stdout (the supervisor went away) must not take the service down with it.
    let _ = std::io::stdout().lock().write_all(&line.to_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
        assert!(sink.buffered() <= BUFFERED + 64);
        drop(guard);
    }

    #[test]
    fn a_line_is_one_json_object_with_the_fixed_keys_first() {
        let fields = br#","user_id":7,"why":"a \"quoted\"\nword""#;
        let trace = [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36,
        ];
        let span = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
        let line = Line {
            level: level_name(&tracing::Level::INFO),
            service: "users",
            instance: "users-2",
            msg: "user \"created\"",
            ids: Some((&trace, &span)),
            fields,
        }
        .to_bytes();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["level"], "info");
        assert_eq!(v["service"], "users");
        assert_eq!(v["instance"], "users-2");
        assert_eq!(v["msg"], "user \"created\"");
        assert_eq!(v["user_id"], 7);
        assert_eq!(v["why"], "a \"quoted\"\nword");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["span_id"], "00f067aa0ba902b7");
        assert!(v["ts_ms"].as_u64().unwrap() > 1_600_000_000_000);
        let text = String::from_utf8(line).unwrap();
        assert!(text.starts_with(r#"{"ts_ms":"#), "{text}");
    }

    #[test]
    fn every_kind_of_field_is_written_as_json_once() {
        let (text, lines) = lines_of(|| {
            let path = "/a\"b";
            tracing::info!(method = %"GET", path, status = 200u16, ms = 1.25, neg = -3i64, ok = true, why = ?Some("x"), "request {}", 1);
            tracing::warn!(nan = f64::NAN, "second");
        });
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert_eq!(first["msg"], "request 1");
        assert_eq!(first["method"], "GET");
        assert_eq!(first["path"], "/a\"b");
        assert_eq!(first["status"], 200);
        assert_eq!(first["ms"], 1.25);
        assert_eq!(first["neg"], -3);
        assert_eq!(first["ok"], true);
        assert_eq!(first["why"], "Some(\"x\")");
        assert!(first.get("trace_id").is_none(), "no span, no ids");
        assert_eq!(lines[1]["level"], "warn");
        assert_eq!(lines[1]["msg"], "second");
        assert_eq!(lines[1]["nan"], Value::Null);
        assert!(
            !text.contains("request 1\",\"msg"),
            "one message each: {text}"
        );
    }

    #[test]
    fn an_events_field_never_replaces_a_fixed_key() {
        let (text, lines) = lines_of(|| {
            tracing::info!(level = "spoofed", msg = "spoofed", kept = 1, "real message");
        });
        let line = &lines[0];
        assert_eq!(line["level"], "info");
        assert_eq!(line["msg"], "real message");
        assert_eq!(line["kept"], 1);
        assert!(!text.contains("spoofed"), "{text}");
    }

    /// The lines the layer writes for the events `write` makes, as text and as JSON.
    fn lines_of(write: impl FnOnce()) -> (String, Vec<Value>) {
        use tracing_subscriber::layer::SubscriberExt;
        let out = Shared::default();
        let (sink, guard) = Sink::start(Box::new(out.clone()));
        let layer = JsonLines {
            service: "demo".into(),
            instance: "demo-1".into(),
            out: sink,
        };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), write);
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        (text, lines)
    }
}
