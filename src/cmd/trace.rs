//! `msctl trace ID|last`: one trace as a waterfall, or its spans as JSON.

use crate::cli::TraceArgs;
use crate::cmd::Context;
use crate::error::MsctlError;
use crate::traces;

pub async fn trace(ctx: &Context, args: TraceArgs) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    traces::check_store(&project)?;
    let found = traces::find(&project, &args.id).map_err(MsctlError::NotFound)?;
    // Right after a request its spans may still be on their way from the services.
    let found = if traces::is_fresh(&found) {
        traces::settled(&project, &found.id).await
    } else {
        found
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&found.spans)?)?;
    } else {
        let width = console::Term::stdout()
            .size_checked()
            .map_or(80, |(_, w)| w as usize)
            .min(120);
        outln!("{}", crate::waterfall::render(&found, width))?;
        print_events(&found)?;
        if args.logs {
            print_logs(&project, &found)?;
        }
    }
    Ok(0)
}

/// The spans' events (a fault `msctl fault` injected, say), under each span's row label, with
/// their time from the start of the trace.
fn print_events(trace: &traces::Trace) -> std::io::Result<()> {
    let start = trace
        .spans
        .iter()
        .map(|s| s.start_time_unix_nano)
        .min()
        .unwrap_or(0);
    let mut header = false;
    for span in trace.spans.iter().filter(|s| !s.events.is_empty()) {
        if !header {
            outln!()?;
            outln!("EVENTS")?;
            header = true;
        }
        outln!("{} {}", span.resource.service_name, span.name)?;
        for e in &span.events {
            let at = e.time_unix_nano.saturating_sub(start) as f64 / 1e6;
            let attributes: Vec<String> = e
                .attributes
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect();
            outln!("    +{at:.1} ms {} {}", e.name, attributes.join(" "))?;
        }
    }
    Ok(())
}

/// Each span's log records, under the span's row label, in the waterfall's order.
fn print_logs(project: &crate::project::Project, trace: &traces::Trace) -> std::io::Result<()> {
    let records = traces::logs_of(project, &trace.id);
    outln!()?;
    if records.is_empty() {
        return outln!("no log records in this trace");
    }
    outln!("LOGS")?;
    for span in &trace.spans {
        let mine: Vec<_> = records
            .iter()
            .filter(|r| r.span_id.as_deref() == Some(span.span_id.as_str()))
            .collect();
        if mine.is_empty() {
            continue;
        }
        outln!("{} {}", span.resource.service_name, span.name)?;
        for r in mine {
            outln!("    {}", traces::log_line(r))?;
        }
    }
    let loose: Vec<_> = records
        .iter()
        .filter(|r| {
            !trace
                .spans
                .iter()
                .any(|s| r.span_id.as_deref() == Some(s.span_id.as_str()))
        })
        .collect();
    if !loose.is_empty() {
        outln!("(not tied to a recorded span)")?;
        for r in loose {
            outln!(
                "    {} {}",
                r.resource.service_instance_id,
                traces::log_line(r)
            )?;
        }
    }
    Ok(())
}
