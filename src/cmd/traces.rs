//! `msctl traces`: recent traces, newest first, filtered; and `msctl traces export --otlp URL`.

use crate::cli::{TracesAction, TracesArgs};
use crate::cmd::Context;
use crate::error::MsctlError;
use crate::table;
use crate::traces::{self, Trace};
use msctl_contract::otlp::{self, Verdict};
use std::time::{Duration, UNIX_EPOCH};

pub async fn traces(ctx: &Context, args: TracesArgs) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    let min = match &args.min_duration {
        Some(raw) => Some(crate::config::parse_duration(raw).ok_or_else(|| {
            MsctlError::Usage(format!(
                "`{raw}` is not a duration such as 10ms, 2s or 1m 30s"
            ))
        })?),
        None => None,
    };
    let all = traces::group(traces::load_spans(&project.traces_dir()));
    let chosen: Vec<&Trace> = all
        .iter()
        .filter(|t| {
            args.service
                .as_ref()
                .is_none_or(|s| t.services().contains(s))
        })
        .filter(|t| {
            args.route
                .as_ref()
                .is_none_or(|r| t.route().contains(r.as_str()))
        })
        .filter(|t| !args.errors || t.has_error())
        .filter(|t| min.is_none_or(|m| t.duration() >= m))
        .take(args.limit)
        .collect();
    if let Some(TracesAction::Export { otlp }) = args.action {
        return export(&chosen, &otlp).await;
    }
    if args.json {
        let list: Vec<_> = chosen.iter().map(|t| t.summary()).collect();
        outln!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(0);
    }
    if chosen.is_empty() {
        say!(
            "no traces{}",
            if all.is_empty() {
                " recorded yet; make a request, for example `msctl call users/1/posts`"
            } else {
                " match"
            }
        );
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = chosen
        .iter()
        .map(|t| {
            vec![
                clock(t.start()),
                t.id.clone(),
                t.route(),
                t.status()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                crate::supervisor::health::ms(t.duration()),
                t.services().join(","),
                t.spans.len().to_string(),
                if t.has_error() {
                    "ERR".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    outln!(
        "{}",
        table::render(
            &[
                "TIME", "TRACE", "ROUTE", "STATUS", "DURATION", "SERVICES", "SPANS", ""
            ],
            &rows
        )
    )?;
    Ok(0)
}

/// Wall-clock time of day, UTC, to the millisecond: enough to tell recent requests apart.
fn clock(unix_nanos: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(unix_nanos);
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60,
        since.subsec_millis()
    )
}

/// Spans per OTLP request.
const BATCH: usize = 512;
/// Attempts per request when the receiver answers 429, 502, 503 or 504.
const ATTEMPTS: u32 = 4;

async fn export(chosen: &[&Trace], base: &str) -> anyhow::Result<u8> {
    let parsed = reqwest::Url::parse(base)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if parsed.is_none() {
        return Err(MsctlError::Usage(format!(
            "`{base}` is not an http:// or https:// URL; give the receiver's base, such as http://127.0.0.1:4318"
        ))
        .into());
    }
    let url = otlp::traces_url(base);
    let spans: Vec<_> = chosen
        .iter()
        .flat_map(|t| t.spans.iter().cloned())
        .collect();
    if spans.is_empty() {
        say!("no spans to export");
        return Ok(0);
    }
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut requests = 0;
    for batch in spans.chunks(BATCH) {
        send(&client, &url, batch).await?;
        requests += 1;
    }
    say!(
        "exported {} spans of {} traces in {requests} request(s) to {url}",
        spans.len(),
        chosen.len()
    );
    Ok(0)
}

/// Posts one batch, retrying where the OTLP spec allows. A receiver that cannot be reached
/// (12) is kept apart from one that answered and refused (13).
async fn send(
    client: &reqwest::Client,
    url: &str,
    spans: &[msctl_contract::span::Span],
) -> Result<(), MsctlError> {
    let body = serde_json::to_vec(&otlp::export_request(spans)).unwrap_or_default();
    let mut attempt = 1;
    loop {
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| {
                MsctlError::Unreachable(format!(
                    "the OTLP receiver at {url} could not be reached: {}",
                    msctl_contract::root_cause(&e)
                ))
            })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let answer = response.bytes().await.unwrap_or_default();
        let refused = |status: u16, body: &str| {
            MsctlError::Rejected(format!(
                "the OTLP receiver at {url} was reached but answered {status}: {body}"
            ))
        };
        match otlp::verdict(status, &answer) {
            Verdict::Accepted => return Ok(()),
            Verdict::Partial { rejected, message } => {
                return Err(MsctlError::Rejected(format!(
                    "the OTLP receiver at {url} rejected {rejected} of {} span(s): {message}",
                    spans.len()
                )));
            }
            Verdict::Retry if attempt < ATTEMPTS => {
                tokio::time::sleep(otlp::retry_pause(attempt, retry_after)).await;
                attempt += 1;
            }
            Verdict::Retry => {
                return Err(refused(status, &String::from_utf8_lossy(&answer)));
            }
            Verdict::Refused { status, body } => return Err(refused(status, &body)),
        }
    }
}
