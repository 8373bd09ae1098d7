//! The span store and the OTLP receiver: `msctl trace last`, `msctl trace ID` and
//! `msctl traces --route R --errors` over 100,000 stored spans (target < 100 ms each, timed as
//! the whole command a user runs), and how many spans a second the receiver takes in and stores.

use crate::harness::*;
use msctl::telemetry::store::Store;
use msctl_contract::span::{Resource, Span, SpanStatus};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan};
use prost::Message;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SPANS: usize = 100_000;
const SPANS_PER_TRACE: usize = 5;
const ROUTES: [&str; 4] = [
    "/users/{id}/posts",
    "/users/{id}",
    "/posts/{id}",
    "/users/{*rest}",
];
/// Spans per OTLP request in the intake test, as an SDK batches them.
const BATCH: usize = 512;
const SENDERS: usize = 4;
const INTAKE_FOR: Duration = Duration::from_secs(3);

pub fn run(runs: usize) {
    let bins = release_bins();
    let msctl = bins.join("msctl");
    queries(&msctl, runs);
    intake(&bins);
}

fn span(i: usize) -> Span {
    let trace = i / SPANS_PER_TRACE;
    let route = ROUTES[trace % ROUTES.len()];
    let mut attributes = serde_json::Map::new();
    attributes.insert("http.route".into(), route.into());
    let error = trace.is_multiple_of(50) && i % SPANS_PER_TRACE == 1;
    let start = 1_700_000_000_000_000_000 + trace as u64 * 1_000_000;
    Span {
        trace_id: format!("{:032x}", trace + 1),
        span_id: format!("{:016x}", i + 1),
        parent_span_id: (!i.is_multiple_of(SPANS_PER_TRACE))
            .then(|| format!("{:016x}", trace * SPANS_PER_TRACE + 1)),
        name: format!("GET {route}"),
        kind: 2,
        start_time_unix_nano: start + (i % SPANS_PER_TRACE) as u64 * 1000,
        end_time_unix_nano: start + 900_000,
        status: SpanStatus {
            code: if error { 2 } else { 0 },
            message: None,
        },
        attributes,
        resource: Resource {
            service_name: ["gateway", "users", "posts"][i % 3].into(),
            service_instance_id: "x-1".into(),
        },
        events: Vec::new(),
        trace_state: None,
    }
}

/// Times msctl's trace commands over a store of `SPANS` spans.
fn queries(msctl: &Path, runs: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("msctl.toml"),
        "[services.x]\ncommand = [\"true\"]\n",
    )
    .expect("manifest");
    std::fs::create_dir_all(dir.path().join(".msctl")).expect("state folder");
    let filled = Instant::now();
    let mut store = Store::open(&dir.path().join(".msctl/telemetry.db")).expect("store");
    let all: Vec<Span> = (0..SPANS).map(span).collect();
    for chunk in all.chunks(BATCH) {
        store.insert_spans(chunk).expect("insert");
    }
    drop(store);
    let fill = filled.elapsed();
    let middle = format!("{:032x}", SPANS / SPANS_PER_TRACE / 2);
    let cases: [(&str, Vec<&str>); 4] = [
        ("trace last", vec!["trace", "last"]),
        ("trace ID", vec!["trace", &middle]),
        (
            "traces --route R --errors",
            vec!["traces", "--route", "/users/{id}/posts", "--errors"],
        ),
        ("traces", vec!["traces"]),
    ];
    let mut rows = Vec::new();
    for (name, args) in cases {
        let times: Vec<Duration> = (0..runs.max(3))
            .map(|_| {
                let start = Instant::now();
                let ok = Command::new(msctl)
                    .args(&args)
                    .current_dir(dir.path())
                    .env("NO_COLOR", "1")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "msctl {args:?} failed");
                start.elapsed()
            })
            .collect();
        let m = median(times);
        rows.push(vec![
            name.to_string(),
            ms(m),
            if m < Duration::from_millis(100) {
                "yes".into()
            } else {
                "NO".into()
            },
        ]);
    }
    println!(
        "span store: {SPANS} spans in {} traces (filled in {})",
        SPANS / SPANS_PER_TRACE,
        ms(fill)
    );
    print_table(&["COMMAND (whole process)", "MEDIAN", "< 100 ms"], &rows);
}

/// One OTLP request body of `BATCH` spans, unique per `(sender, n)`.
fn request(sender: usize, n: u64) -> Vec<u8> {
    let spans = (0..BATCH)
        .map(|i| {
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&n.to_be_bytes());
            trace_id[8] = sender as u8 + 1;
            ProtoSpan {
                trace_id: trace_id.to_vec(),
                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                name: "GET /users/{id}".into(),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + n,
                end_time_unix_nano: 1_700_000_000_000_100_000 + n,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(ProtoResource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("load".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Spans a second the supervisor's receiver takes in and stores, from `SENDERS` exporters
/// sending `BATCH`-span requests over keep-alive connections as fast as they are answered.
fn intake(bins: &Path) {
    let system = Running::up(
        bins,
        &format!(
            "[services.idle]\ncommand = [\"{}\"]\n",
            bins.join("msctl-fixture").display()
        ),
    );
    let reg = system.registry();
    let addr = reg["supervisor"]["control"]
        .as_str()
        .expect("address")
        .to_string();
    let token = reg["supervisor"]["otlp_token"]
        .as_str()
        .expect("token")
        .to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (sent, stop, addr, token) = (sent.clone(), stop.clone(), addr.clone(), token.clone());
            std::thread::spawn(move || {
                let stream = TcpStream::connect(&addr).expect("connects");
                let mut writer = stream.try_clone().expect("clones");
                let mut reader = BufReader::new(stream);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = request(sender, n);
                    let head = format!(
                        "POST /v1/traces HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
                        break;
                    }
                    if !read_response(&mut reader) {
                        break;
                    }
                    sent.fetch_add(BATCH as u64, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(INTAKE_FOR);
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.join();
    }
    let sending = start.elapsed();
    let sent = sent.load(Ordering::Relaxed);
    // Stored is what counts: wait until the writer has caught up.
    let db = system.dir.path().join(".msctl/telemetry.db");
    let (mut stored, mut dropped) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(store) = Store::open_read(&db) {
            stored = store.span_count();
            dropped = store.counter(msctl::telemetry::receiver::DROPPED);
        }
        if stored + dropped >= sent {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stored_in = start.elapsed();
    drop(system);
    println!();
    println!("receiver intake: {SENDERS} exporters, {BATCH} spans a request, protobuf");
    print_table(
        &[
            "SENT",
            "STORED",
            "DROPPED",
            "SENT/S",
            "STORED/S (until caught up)",
        ],
        &[vec![
            sent.to_string(),
            stored.to_string(),
            dropped.to_string(),
            format!("{:.0}", sent as f64 / sending.as_secs_f64()),
            format!("{:.0}", stored as f64 / stored_in.as_secs_f64()),
        ]],
    );
}
