//! Spans: recorded per request, shaped like OpenTelemetry spans (DESIGN.md), written as JSON lines
//! by a background task so that no request ever waits for the disk.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

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

/// Hands finished spans to the background writer. Cheap to clone; a disabled tracer drops spans.
#[derive(Debug, Clone)]
pub struct Tracer {
    tx: Option<mpsc::Sender<Span>>,
    resource: Resource,
}

/// Spans that may wait for the writer; past this a burst drops spans rather than slow requests.
const QUEUE: usize = 16 * 1024;
/// A trace file is rotated to `<file>.1` when it grows past this.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
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
    /// `otlp` traces URL, also exports them there. Must run inside a Tokio runtime.
    pub fn start(
        dir: Option<&Path>,
        otlp: Option<String>,
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
        let exporter = otlp.map(|url| {
            let (etx, erx) = mpsc::channel(QUEUE);
            tokio::spawn(export_spans(url, erx));
            etx
        });
        tokio::spawn(write_spans(file, exporter, rx));
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
            let _ = tx.try_send(span);
        }
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
    exporter: Option<mpsc::Sender<Span>>,
    mut rx: mpsc::Receiver<Span>,
) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            span = rx.recv() => match span {
                Some(span) => {
                    if let Some(exporter) = &exporter {
                        let _ = exporter.try_send(span.clone());
                    }
                    if let Some(file) = &mut file {
                        file.append(&span);
                    }
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
/// A batch goes out at least this often.
const EXPORT_EVERY: Duration = Duration::from_secs(1);

/// Batches spans to the OTLP receiver at `url`. Failures are logged, once per kind of failure
/// in a row, and the batch is dropped: export must never hold up a service.
async fn export_spans(url: String, mut rx: mpsc::Receiver<Span>) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("the OTLP client builds");
    let mut batch: Vec<Span> = Vec::new();
    let mut tick = tokio::time::interval(EXPORT_EVERY);
    let mut last_error = String::new();
    loop {
        let (due, closed) = tokio::select! {
            span = rx.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    (batch.len() >= EXPORT_BATCH, false)
                }
                None => (true, true),
            },
            _ = tick.tick() => (true, false),
        };
        if due && !batch.is_empty() {
            match crate::otlp::send(&client, &url, &batch, 3).await {
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
        if closed {
            return;
        }
    }
}

/// Appends one span to the trace file at `path` from a short-lived process (`msctl call`), in
/// one write so that concurrent appenders never split a line, rotating as the writer task does.
pub fn append(path: &Path, span: &Span) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(span).map_err(std::io::Error::other)?;
    line.push(b'\n');
    if std::fs::metadata(path).is_ok_and(|m| m.len() + line.len() as u64 > MAX_FILE_BYTES) {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(path, old)?;
    }
    open_private_append(path)?.write_all(&line)
}

/// Spans name paths and peers; like the rest of .msctl/, only the owner reads them.
fn open_private_append(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

struct TraceFile {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    len: u64,
}

impl TraceFile {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = open_private_append(path)?;
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
    fn appending_from_another_process_rotates_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("msctl.jsonl");
        append(&path, &span(1)).unwrap();
        append(&path, &span(2)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        std::fs::write(&path, vec![b'x'; MAX_FILE_BYTES as usize]).unwrap();
        append(&path, &span(3)).unwrap();
        let fresh: Vec<Span> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(fresh, vec![span(3)]);
        assert!(dir.path().join("msctl.jsonl.1").exists());
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
