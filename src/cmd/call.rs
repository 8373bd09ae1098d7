//! `msctl call`: one HTTP request into the running system, through the gateway by default,
//! traced from msctl itself so the trace id is known before the request leaves.

use crate::cli::CallArgs;
use crate::cmd::Context;
use crate::error::MsctlError;
use crate::running::{self, System};
use msctl_contract::span::{KIND_CLIENT, Resource, Span, SpanStatus, unix_nanos};
use msctl_contract::trace_context::{FLAG_SAMPLED, TraceParent};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

/// The service `msctl call` sends to unless `--service` says otherwise.
pub const DEFAULT_TARGET: &str = "gateway";
/// How long the root span may take to reach the supervisor.
const RECORD_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateway when the system has one; otherwise the service the path starts with, as a
/// gateway would route it (`api/hello` goes to `api`).
fn default_target<'a>(registry: &'a msctl_contract::registry::Registry, path: &'a str) -> &'a str {
    if registry.services.contains_key(DEFAULT_TARGET) {
        return DEFAULT_TARGET;
    }
    let first = path
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    if registry.services.contains_key(first) {
        first
    } else {
        DEFAULT_TARGET
    }
}

/// The most `-d @FILE` sends: more than any service takes (the gateway's limit is 1 MiB), and
/// few enough to hold, so that `@/dev/zero` or a wrong file fails at once instead of filling
/// memory.
const BODY_LIMIT: u64 = 16 * 1024 * 1024;

/// The body named by `-d @SOURCE`: a file, or standard input for `-`, as curl reads them.
fn read_body(source: &str) -> Result<Vec<u8>, MsctlError> {
    use std::io::Read;
    let (name, reader): (String, Box<dyn Read>) = if source == "-" {
        ("standard input".into(), Box::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(source)
            .map_err(|e| MsctlError::Usage(format!("cannot read the body file {source}: {e}")))?;
        (format!("the body file {source}"), Box::new(file))
    };
    let mut body = Vec::new();
    reader
        .take(BODY_LIMIT + 1)
        .read_to_end(&mut body)
        .map_err(|e| MsctlError::Usage(format!("cannot read {name}: {e}")))?;
    if body.len() as u64 > BODY_LIMIT {
        return Err(MsctlError::Usage(format!(
            "{name} is larger than {} MiB, the most `msctl call` sends",
            BODY_LIMIT / 1024 / 1024
        )));
    }
    Ok(body)
}

pub async fn call(ctx: &Context, args: CallArgs) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    let (method, path) = method_and_path(&args.request)?;
    let body = match &args.data {
        None => None,
        Some(d) => Some(match d.strip_prefix('@') {
            Some(source) => read_body(source)?,
            None => d.clone().into_bytes(),
        }),
    };
    let method = method.unwrap_or(if body.is_some() {
        reqwest::Method::POST
    } else {
        reqwest::Method::GET
    });
    let (registry, receiver_answers) = match running::inspect(&project).await? {
        // The services answer whether or not their supervisor does.
        System::Running { registry, .. } => (registry, true),
        System::Unresponsive { registry } => (registry, false),
        other => return Err(running::not_running(&project, &other).into()),
    };
    let target = args
        .service
        .as_deref()
        .unwrap_or_else(|| default_target(&registry, &path));
    let Some(entry) = registry.services.get(target) else {
        let names: Vec<&str> = registry.services.keys().map(String::as_str).collect();
        return Err(MsctlError::Usage(format!(
            "no service `{target}` is running; running: {}; pick one with --service",
            names.join(", ")
        ))
        .into());
    };
    let healthy = registry.healthy_addresses(target);
    let Some((instance, address)) = healthy.first().cloned() else {
        let states: Vec<String> = entry
            .instances
            .iter()
            .map(|i| format!("{} is {}", i.id, i.state))
            .collect();
        return Err(MsctlError::Unreachable(format!(
            "`{target}` has no healthy instance ({})",
            states.join(", ")
        ))
        .into());
    };

    let trace =
        std::iter::repeat_with(|| TraceParent::new(rand::random(), rand::random(), FLAG_SAMPLED))
            .find_map(|t| t)
            .expect("random ids are not all zero forever");
    let url = format!("http://{address}{path}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut request = client
        .request(method.clone(), &url)
        .header("traceparent", trace.header_value());
    let mut has_content_type = false;
    for h in &args.headers {
        let (k, v) = h.split_once(':').ok_or_else(|| {
            MsctlError::Usage(format!("header `{h}` is not in the form 'Name: value'"))
        })?;
        let name = reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).map_err(|_| {
            MsctlError::Usage(format!(
                "header `{h}`: `{}` is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)",
                k.trim()
            ))
        })?;
        let value = reqwest::header::HeaderValue::from_str(v.trim()).map_err(|_| {
            MsctlError::Usage(format!(
                "header `{h}`: its value holds a line break or another control character"
            ))
        })?;
        has_content_type |= name == reqwest::header::CONTENT_TYPE;
        request = request.header(name, value);
    }
    if let Some(body) = body {
        if !has_content_type {
            // A body meant as JSON is sent as JSON even when it does not parse, so that the
            // service says what is wrong with it rather than that it wants JSON.
            let meant = body
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'{' || *b == b'[');
            match serde_json::from_slice::<Value>(&body) {
                Ok(_) => request = request.header("content-type", "application/json"),
                Err(e) if meant => {
                    say!(
                        "warning: the body is not valid JSON ({e}); sending it as JSON all the same"
                    );
                    request = request.header("content-type", "application/json");
                }
                Err(_) => {}
            }
        }
        request = request.body(body);
    }
    let started = SystemTime::now();
    let clock = Instant::now();
    let limit = (!args.timeout.is_zero()).then_some(args.timeout);
    let mut received = 0u64;
    let sent = receive(request, limit, args.json, &mut received).await;
    let elapsed = clock.elapsed();
    let outcome = match &sent {
        Ok((status, _, _)) => Ok(status.as_u16()),
        // The answer came; only its reader went away.
        Err(Failed::Stdout(_, status)) => Ok(status.as_u16()),
        Err(e) => Err(e.describe(args.timeout, received)),
    };
    let receiver = receiver_answers.then(|| {
        (
            format!("http://{}/v1/traces", registry.supervisor.control),
            registry.supervisor.otlp_token.clone(),
        )
    });
    record_span(
        receiver, &trace, &method, &path, target, &address, started, elapsed, &outcome,
    )
    .await;
    let (status, headers, body) = match sent {
        Ok(ok) => ok,
        Err(Failed::Stdout(e, _)) => return Err(e.into()),
        Err(Failed::TooLarge) => {
            return Err(MsctlError::Usage(format!(
                "the answer to {method} {path} is larger than {} MiB, the most --json holds; without --json msctl call passes it on as it comes",
                SHOWN_WHOLE / 1024 / 1024
            ))
            .into());
        }
        Err(e) => {
            return Err(MsctlError::Unreachable(format!(
                "{method} {url} ({instance}) failed: {}",
                e.describe(args.timeout, received)
            ))
            .into());
        }
    };
    let bytes = match body {
        Body::Whole(bytes) => bytes,
        // Already on stdout, as it came.
        Body::Streamed => Vec::new(),
    };
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    let stdout_is_terminal = console::Term::stdout().is_term();
    if args.json {
        let headers: Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        let out = json!({
            "status": status.as_u16(),
            "headers": headers,
            "body": parsed.clone().unwrap_or_else(|| json!(String::from_utf8_lossy(&bytes))),
            "duration_ms": elapsed.as_secs_f64() * 1000.0,
            "trace_id": trace.trace_id_hex(),
            "instance": instance,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
    } else if !bytes.is_empty() {
        let mut stdout = std::io::stdout().lock();
        match (&parsed, stdout_is_terminal) {
            (Some(v), true) => writeln!(
                stdout,
                "{}",
                crate::json_view::pretty(v, console::colors_enabled())
            )?,
            (Some(v), false) => writeln!(stdout, "{}", serde_json::to_string(v)?)?,
            (None, _) => stdout.write_all(&bytes)?,
        }
        stdout.flush()?;
    }
    let status_style = if status.is_success() || status.is_redirection() {
        console::Style::new().green()
    } else {
        console::Style::new().red()
    };
    say!(
        "{} · {} · trace {}",
        status_style.for_stderr().apply_to(status.to_string()),
        crate::supervisor::health::ms(elapsed),
        trace.trace_id_hex()
    );
    if args.trace {
        let found = crate::traces::settled(&project, &trace.trace_id_hex()).await;
        let width = console::Term::stdout()
            .size_checked()
            .map_or(80, |(_, w)| w as usize)
            .min(120);
        outln!("\n{}", crate::waterfall::render(&found, width))?;
    }
    Ok(match status.as_u16() {
        200..=399 => 0,
        400..=499 => crate::error::code::HTTP_4XX,
        _ => crate::error::code::HTTP_5XX,
    })
}

/// Answers `msctl call` holds whole, to show JSON formatted (pretty on a terminal, on one line
/// in a pipe) or as `--json`; a stream, or more than this, goes to stdout as it arrives, as curl
/// passes it on, so it needs no memory and shows at once.
const SHOWN_WHOLE: usize = 16 * 1024 * 1024;

/// An answer's body: held, or already written out.
enum Body {
    Whole(Vec<u8>),
    Streamed,
}

/// Why an answer was not received whole.
enum Failed {
    Http(reqwest::Error),
    /// Nothing came for the whole `--timeout`.
    Quiet,
    /// `--json` and a body past `SHOWN_WHOLE`.
    TooLarge,
    /// Standard output's reader went away (`msctl call … | head`).
    Stdout(std::io::Error, reqwest::StatusCode),
}

impl Failed {
    fn describe(&self, timeout: Duration, received: u64) -> String {
        match self {
            Self::Http(e) => msctl_contract::root_cause(e),
            Self::Quiet if received == 0 => format!(
                "no answer within {}; --timeout sets how long msctl call waits (0 for no limit)",
                humantime::format_duration(timeout)
            ),
            Self::Quiet => format!(
                "the answer stopped for {} after {received} bytes of its body; --timeout sets how long msctl call waits (0 for no limit)",
                humantime::format_duration(timeout)
            ),
            Self::TooLarge => "answer too large for --json".into(),
            Self::Stdout(e, _) => e.to_string(),
        }
    }
}

/// Sends `request` and takes its answer: held whole when it is JSON, of a known small length, or
/// `--json` asks for it, and no larger than `SHOWN_WHOLE`; otherwise written to stdout part by
/// part. `limit` bounds the wait for the
/// head and for each part of the body, not the whole, so a long stream is not cut.
async fn receive(
    request: reqwest::RequestBuilder,
    limit: Option<Duration>,
    json_out: bool,
    received: &mut u64,
) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, Body), Failed> {
    async fn within<T>(
        limit: Option<Duration>,
        step: impl std::future::Future<Output = reqwest::Result<T>>,
    ) -> Result<T, Failed> {
        match limit {
            Some(limit) => tokio::time::timeout(limit, step)
                .await
                .map_err(|_| Failed::Quiet)?
                .map_err(Failed::Http),
            None => step.await.map_err(Failed::Http),
        }
    }
    let mut response = within(limit, request.send()).await?;
    let status = response.status();
    let headers = response.headers().clone();
    // JSON, or a body of a known, small length (JSON sent as text/plain is still shown as JSON);
    // a stream of unknown length is passed on at once.
    let hold = json_out
        || headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("json"))
        || response
            .content_length()
            .is_some_and(|n| n <= SHOWN_WHOLE as u64);
    let mut held = Vec::new();
    let mut streamed = false;
    while let Some(chunk) = within(limit, response.chunk()).await? {
        *received += chunk.len() as u64;
        if !streamed && hold && held.len() + chunk.len() <= SHOWN_WHOLE {
            held.extend_from_slice(&chunk);
            continue;
        }
        if json_out {
            return Err(Failed::TooLarge);
        }
        let out = |bytes: &[u8]| {
            crate::output::stdout_bytes(bytes).map_err(|e| Failed::Stdout(e, status))
        };
        if !streamed {
            out(&held)?;
            held = Vec::new();
            streamed = true;
        }
        out(&chunk)?;
    }
    let body = if streamed {
        Body::Streamed
    } else {
        Body::Whole(held)
    };
    Ok((status, headers, body))
}

/// `[METHOD] PATH`: `users/1` or `GET users/1` or `post /users`.
fn method_and_path(words: &[String]) -> Result<(Option<reqwest::Method>, String), MsctlError> {
    let (method, path) = match words {
        [path] => (None, path),
        [method, path] => {
            let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .map_err(|_| MsctlError::Usage(format!("`{method}` is not an HTTP method")))?;
            (Some(m), path)
        }
        _ => {
            return Err(MsctlError::Usage(
                "give a path, optionally after a method: msctl call [METHOD] PATH".into(),
            ));
        }
    };
    // A URL would be taken for a path to a service called `http:`.
    if let Some((scheme, rest)) = path.split_once("://")
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        let route = rest.split_once('/').map_or("", |(_, p)| p);
        return Err(MsctlError::Usage(format!(
            "`{path}` is a URL; msctl call takes the path the system answers, found in the registry: `msctl call {}`",
            if route.is_empty() { "users/1" } else { route }
        )));
    }
    let path = if path.starts_with('/') {
        path.clone()
    } else {
        format!("/{path}")
    };
    if path.contains(char::is_whitespace) {
        return Err(MsctlError::Usage(format!(
            "path `{path}` has spaces; encode them as %20"
        )));
    }
    Ok((method, path))
}

/// Sends msctl's own client span, the root of the trace, to the supervisor's OTLP receiver.
#[allow(clippy::too_many_arguments)]
async fn record_span(
    receiver: Option<(String, String)>,
    trace: &TraceParent,
    method: &reqwest::Method,
    path: &str,
    target: &str,
    address: &str,
    started: SystemTime,
    elapsed: Duration,
    outcome: &Result<u16, String>,
) {
    if std::env::var("MSCTL_TRACE").is_ok_and(|v| v == "off") {
        return;
    }
    let mut attributes = Map::new();
    attributes.insert("http.request.method".into(), json!(method.as_str()));
    attributes.insert("url.path".into(), json!(path));
    attributes.insert("peer.service".into(), json!(target));
    if let Some((host, port)) = address.rsplit_once(':') {
        attributes.insert("server.address".into(), json!(host));
        attributes.insert(
            "server.port".into(),
            json!(port.parse::<u16>().unwrap_or(0)),
        );
    }
    let status = SpanStatus::of_call(
        &mut attributes,
        outcome
            .clone()
            .map_err(|message| ("connection_failed", message)),
    );
    let start = unix_nanos(started);
    let span = Span {
        trace_id: trace.trace_id_hex(),
        span_id: trace.span_id_hex(),
        parent_span_id: None,
        // The route is the server's to name; a client span without one is named by its method.
        name: method.to_string(),
        kind: KIND_CLIENT,
        start_time_unix_nano: start,
        end_time_unix_nano: start + elapsed.as_nanos() as u64,
        status,
        attributes,
        resource: Resource {
            service_name: "msctl".into(),
            service_instance_id: format!("msctl-{}", std::process::id()),
        },
        events: Vec::new(),
        trace_state: None,
    };
    let Some((url, token)) = receiver else { return };
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .timeout(RECORD_TIMEOUT)
        .build()
    else {
        return;
    };
    // Tracing must never fail a call: a span that cannot be delivered is dropped.
    // Answered once the span is stored, so that `msctl trace last` right after finds this call.
    let headers = [
        ("authorization".to_string(), format!("Bearer {token}")),
        (
            crate::telemetry::receiver::WAIT_STORED.to_string(),
            "1".to_string(),
        ),
    ];
    let spans = [span];
    let delivery = crate::telemetry::export::send(&client, &url, &spans, &headers, 1);
    // The request's own timeout is the exporter's; this one is the call's.
    let _ = tokio::time::timeout(RECORD_TIMEOUT, delivery).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use msctl_contract::registry::{Registry, ServiceEntry};

    fn with(names: &[&str]) -> Registry {
        let mut r = Registry::default();
        for n in names {
            r.services.insert(n.to_string(), ServiceEntry::default());
        }
        r
    }

    #[test]
    fn the_gateway_first_then_the_service_the_path_names() {
        let sample = with(&["gateway", "users"]);
        assert_eq!(default_target(&sample, "/users/1"), "gateway");
        let bare = with(&["api", "worker"]);
        assert_eq!(default_target(&bare, "/api/hello"), "api");
        assert_eq!(default_target(&bare, "/worker?x=1"), "worker");
        // Nothing matches: the gateway, so that the error names what is missing.
        assert_eq!(default_target(&bare, "/billing/1"), "gateway");
        assert_eq!(default_target(&bare, "/"), "gateway");
    }

    #[test]
    fn a_url_is_refused_with_the_path_to_give_instead() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let err = method_and_path(&words(&["http://127.0.0.1:8080/users/1?x=2"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is a URL") && err.ends_with("`msctl call users/1?x=2`"),
            "{err}"
        );
        let err = method_and_path(&words(&["GET", "https://example.com"]))
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("`msctl call users/1`"), "{err}");
        // A path whose query holds a URL is a path.
        let (_, path) = method_and_path(&words(&["web/login?next=http://127.0.0.1/x"])).unwrap();
        assert_eq!(path, "/web/login?next=http://127.0.0.1/x");
        let (_, path) = method_and_path(&words(&["login?next=http://127.0.0.1/x"])).unwrap();
        assert_eq!(path, "/login?next=http://127.0.0.1/x");
    }
}
