//! The tracer: spans recorded per request, in the contract's format (docs/spans.md), written as
//! JSON lines by a background task so that no request ever waits for the disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub use msctl_contract::span::{
    KIND_CLIENT, KIND_SERVER, MAX_FILE_BYTES, Resource, Span, SpanStatus, unix_nanos,
};

/// Hands finished spans to the background writer. Cheap to clone; a disabled tracer drops spans.
#[derive(Debug, Clone)]
pub struct Tracer {
    tx: Option<mpsc::Sender<ToWriter>>,
    resource: Resource,
}

/// What the background tasks are sent: spans, and a request to write out what they hold.
// Nearly every message is a span: boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum ToWriter {
    Span(Span),
    Flush(oneshot::Sender<()>),
}

/// Spans that may wait for the writer; past this a burst drops spans rather than slow requests.
const QUEUE: usize = 16 * 1024;
/// The writer flushes at least this often, so `msctl trace last` sees a request at once.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

impl Tracer {
    /// A tracer that records nothing (`MSCTL_TRACE=off`, or no trace folder).
    pub fn disabled(service: &str, instance: &str) -> Self {
        Self {
            tx: None,
            resource: resource(service, instance),
        }
    }

    /// Starts the background task that appends spans to `dir/<instance>.jsonl` and, with an
    /// `otlp` target, also exports them there. Must run inside a Tokio runtime.
    pub fn start(
        dir: Option<&Path>,
        otlp: Option<OtlpTarget>,
        service: &str,
        instance: &str,
    ) -> std::io::Result<Self> {
        let file = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                Some(TraceFile::open(&dir.join(format!("{instance}.jsonl")))?)
            }
            None => None,
        };
        if file.is_none() && otlp.is_none() {
            return Ok(Self::disabled(service, instance));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        match (file, otlp) {
            // Export only, as under msctl: spans go straight to the exporter, uncopied.
            (None, Some(target)) => {
                tokio::spawn(export_spans(target, rx));
            }
            (file, otlp) => {
                let exporter = otlp.map(|target| {
                    let (etx, erx) = mpsc::channel(QUEUE);
                    tokio::spawn(export_spans(target, erx));
                    etx
                });
                tokio::spawn(write_spans(file, exporter, rx));
            }
        }
        Ok(Self {
            tx: Some(tx),
            resource: resource(service, instance),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    pub fn record(&self, span: Span) {
        if let Some(tx) = &self.tx {
            // A full queue means the disk is behind: drop the span, never block the request.
            let _ = tx.try_send(ToWriter::Span(span));
        }
    }

    /// Writes out every span recorded so far, to the file and to the OTLP receiver, waiting at
    /// most `limit`. A service calls it as it exits, so that its last requests are not lost.
    pub async fn flush(&self, limit: Duration) {
        let Some(tx) = &self.tx else { return };
        let (ack, done) = oneshot::channel();
        let flushed = async {
            if tx.send(ToWriter::Flush(ack)).await.is_ok() {
                let _ = done.await;
            }
        };
        let _ = tokio::time::timeout(limit, flushed).await;
    }
}

fn resource(service: &str, instance: &str) -> Resource {
    Resource {
        service_name: service.to_string(),
        service_instance_id: instance.to_string(),
    }
}

async fn write_spans(
    mut file: Option<TraceFile>,
    exporter: Option<mpsc::Sender<ToWriter>>,
    mut rx: mpsc::Receiver<ToWriter>,
) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(ToWriter::Span(span)) => {
                    if let Some(exporter) = &exporter {
                        let _ = exporter.try_send(ToWriter::Span(span.clone()));
                    }
                    if let Some(file) = &mut file {
                        file.append(&span);
                    }
                }
                Some(ToWriter::Flush(ack)) => {
                    if let Some(file) = &mut file {
                        file.flush();
                    }
                    if let Some(exporter) = &exporter {
                        let (next, done) = oneshot::channel();
                        if exporter.send(ToWriter::Flush(next)).await.is_ok() {
                            let _ = done.await;
                        }
                    }
                    let _ = ack.send(());
                }
                None => break,
            },
            _ = tick.tick() => if let Some(file) = &mut file { file.flush() },
        }
    }
    if let Some(file) = &mut file {
        file.flush();
    }
}

/// Spans sent to an OTLP receiver in one request, at most.
const EXPORT_BATCH: usize = 512;
/// Where spans are exported, as the OpenTelemetry variables say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpTarget {
    /// The full `/v1/traces` URL.
    pub url: String,
    /// From `OTEL_EXPORTER_OTLP_HEADERS`: msctl's receiver wants its bearer token.
    pub headers: Vec<(String, String)>,
    /// From `OTEL_BSP_SCHEDULE_DELAY`: a batch goes out at least this often.
    pub every: Duration,
}

/// The OpenTelemetry default batch delay.
pub const DEFAULT_EXPORT_EVERY: Duration = Duration::from_secs(5);

/// Batches spans to the OTLP receiver at `url`. Failures are logged, once per kind of failure
/// in a row, and the batch is dropped: export must never hold up a service.
async fn export_spans(target: OtlpTarget, mut rx: mpsc::Receiver<ToWriter>) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("the OTLP client builds");
    let mut batch: Vec<Span> = Vec::new();
    let mut tick = tokio::time::interval(target.every);
    let mut last_error = String::new();
    loop {
        let mut flushed = None;
        let (due, closed) = tokio::select! {
            msg = rx.recv() => match msg {
                Some(ToWriter::Span(span)) => {
                    batch.push(span);
                    (batch.len() >= EXPORT_BATCH, false)
                }
                Some(ToWriter::Flush(ack)) => {
                    flushed = Some(ack);
                    (true, false)
                }
                None => (true, true),
            },
            _ = tick.tick() => (true, false),
        };
        if due && !batch.is_empty() {
            match crate::otlp::send(&client, &target.url, &target.headers, &batch, 3).await {
                Ok(()) => last_error.clear(),
                Err(e) => {
                    let message = e.to_string();
                    if message != last_error {
                        crate::log::warn(
                            "OTLP export failed; these spans are dropped",
                            serde_json::json!({"error": message, "spans": batch.len()}),
                        );
                        last_error = message;
                    }
                }
            }
            batch.clear();
        }
        if let Some(ack) = flushed {
            let _ = ack.send(());
        }
        if closed {
            return;
        }
    }
}

struct TraceFile {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    len: u64,
}

impl TraceFile {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = msctl_contract::fs::open_private(path, true)?;
        let len = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            out: std::io::BufWriter::new(file),
            len,
        })
    }

    fn append(&mut self, span: &Span) {
        let Ok(mut line) = serde_json::to_vec(span) else {
            return;
        };
        line.push(b'\n');
        if self.len + line.len() as u64 > MAX_FILE_BYTES {
            self.rotate();
        }
        if self.out.write_all(&line).is_ok() {
            self.len += line.len() as u64;
        }
    }

    fn rotate(&mut self) {
        self.flush();
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        let _ = std::fs::rename(&self.path, &old);
        if let Ok(fresh) = Self::open(&self.path) {
            *self = fresh;
        }
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[tokio::test]
    async fn flush_writes_out_every_recorded_span_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let tracer = Tracer::start(Some(dir.path()), None, "s", "s-1").unwrap();
        for i in 1..=3 {
            tracer.record(span(i));
        }
        tracer.flush(Duration::from_secs(5)).await;
        // No waiting for the periodic flush: a service that exits now loses nothing.
        let text = std::fs::read_to_string(dir.path().join("s-1.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    fn span(i: usize) -> Span {
        Span {
            trace_id: format!("{i:032x}"),
            span_id: format!("{i:016x}"),
            parent_span_id: None,
            name: "GET /x".into(),
            kind: KIND_SERVER,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            status: SpanStatus {
                code: 0,
                message: None,
            },
            attributes: Map::new(),
            resource: resource("s", "s-1"),
        }
    }

    #[tokio::test]
    async fn spans_reach_the_file_within_a_flush_period() {
        let dir = tempfile::tempdir().unwrap();
        let tracer = Tracer::start(Some(dir.path()), None, "s", "s-1").unwrap();
        tracer.record(span(1));
        tracer.record(span(2));
        tokio::time::sleep(FLUSH_EVERY * 3).await;
        let text = std::fs::read_to_string(dir.path().join("s-1.jsonl")).unwrap();
        let spans: Vec<Span> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(spans, vec![span(1), span(2)]);
        assert!(text.contains("\"traceId\"") && text.contains("\"service.instance.id\":\"s-1\""));
    }

    #[test]
    fn a_full_file_is_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s-1.jsonl");
        std::fs::write(&path, vec![b'x'; MAX_FILE_BYTES as usize]).unwrap();
        let mut file = TraceFile::open(&path).unwrap();
        file.append(&span(3));
        file.flush();
        assert_eq!(
            std::fs::metadata(dir.path().join("s-1.jsonl.1"))
                .unwrap()
                .len(),
            MAX_FILE_BYTES
        );
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert_eq!(fresh.lines().count(), 1);
    }
}
