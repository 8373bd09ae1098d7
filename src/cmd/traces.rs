//! `msctl traces`: recent traces, newest first, filtered; and `msctl traces export --otlp URL`.

use crate::cli::{TracesAction, TracesArgs};
use crate::cmd::Context;
use crate::error::MsctlError;
use crate::table;
use crate::telemetry::export;
use crate::telemetry::store::Filter;
use crate::traces::{self, Trace};
use msctl_contract::otlp;

pub async fn traces(ctx: &Context, args: TracesArgs) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    traces::check_store(&project)?;
    let min = match &args.min_duration {
        Some(raw) => Some(crate::config::parse_duration(raw).ok_or_else(|| {
            MsctlError::Usage(format!(
                "`{raw}` is not a duration such as 10ms, 2s or 1m 30s"
            ))
        })?),
        None => None,
    };
    let filter = Filter {
        service: args.service.clone(),
        route: args.route.clone(),
        errors: args.errors,
        min_duration_ns: min.map_or(0, |m| m.as_nanos() as u64),
    };
    let (listed, any) = traces::list(&project, &filter, args.limit);
    let chosen: Vec<&Trace> = listed.iter().collect();
    let dropped = traces::dropped(&project);
    if dropped > 0 {
        say!("note: {dropped} spans were dropped on arrival because the store could not keep up");
    }
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
            if !any {
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
                traces::clock(t.start()),
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
        export::send(&client, &url, batch, &[], ATTEMPTS).await?;
        requests += 1;
    }
    say!(
        "exported {} spans of {} traces in {requests} request(s) to {url}",
        spans.len(),
        chosen.len()
    );
    Ok(0)
}
