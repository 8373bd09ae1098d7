//! The trace waterfall: a row per span, indented under its parent, with a time bar scaled to the
//! whole trace, errors marked with and without colour, and the critical path starred.

use crate::traces::Trace;
use msctl_contract::span::{KIND_CLIENT, Span};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// Renders `trace` for a terminal `width` columns wide (80 reads well).
pub fn render(trace: &Trace, width: usize) -> String {
    let total = trace.end().saturating_sub(trace.start()).max(1);
    let rows = ordered(trace);
    let critical = critical_path(trace);
    // A row is: mark, space, label, space, status, space, duration, two spaces, bar.
    let bar_width = width
        .saturating_sub(2 + LABEL + 1 + STATUS + 1 + DURATION + 2)
        .max(10);
    let err = console::Style::new().red().bold();
    let star = console::Style::new().yellow().bold();
    let bar_style = console::Style::new().cyan();
    let mut out = String::new();
    let _ = writeln!(out, "trace {}", trace.id);
    let summary = format!(
        "{}  {}  {} spans  {}",
        trace.route(),
        crate::supervisor::health::ms(trace.duration()),
        trace.spans.len(),
        trace.services().join(" → ")
    );
    let _ = writeln!(out, "{}", fit(&summary, width));
    let _ = writeln!(
        out,
        "  {:<LABEL$} {:<STATUS$} {:>DURATION$}  {}",
        "SPAN",
        "STATUS",
        "DURATION",
        axis(bar_width, trace.duration())
    );
    for (span, depth, orphan) in rows {
        // Marked up front, where the column's width cannot cut it off.
        let marker = if orphan { "(orphan) " } else { "" };
        let label = format!("{}{marker}{}", "  ".repeat(depth), describe(span));
        let label = fit(&label, LABEL);
        let failed = span.status.code == 2;
        let status = status_text(span);
        let mark = if critical.contains(&span.span_id) {
            star.apply_to("*").to_string()
        } else {
            " ".into()
        };
        let offset = span.start_time_unix_nano.saturating_sub(trace.start());
        let length = span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano);
        let from = (offset as u128 * bar_width as u128 / total as u128) as usize;
        let cells = ((length as u128 * bar_width as u128).div_ceil(total as u128) as usize)
            .clamp(1, bar_width - from.min(bar_width - 1));
        let bar = format!(
            "{}{}",
            " ".repeat(from.min(bar_width - 1)),
            "█".repeat(cells)
        );
        let duration = crate::supervisor::health::ms(std::time::Duration::from_nanos(length));
        let line = format!("{label:<LABEL$} {status:<STATUS$} {duration:>DURATION$}  ");
        let line = if failed {
            err.apply_to(line).to_string()
        } else {
            line
        };
        let bar = if failed {
            err.apply_to(bar).to_string()
        } else {
            bar_style.apply_to(bar).to_string()
        };
        let _ = writeln!(out, "{mark} {line}{bar}");
    }
    let _ = write!(
        out,
        "* critical path   ERR failed span   (orphan) its parent was never recorded"
    );
    out
}

const LABEL: usize = 36;
const STATUS: usize = 15;
const DURATION: usize = 8;

/// `gateway GET /users/{id}/posts` for a server span, `gateway → users GET /users/{id}` for a call.
fn describe(span: &Span) -> String {
    let service = &span.resource.service_name;
    match (
        span.kind,
        span.attributes.get("peer.service").and_then(|v| v.as_str()),
    ) {
        (KIND_CLIENT, Some(peer)) => format!("{service} → {peer} {}", span.name),
        _ => format!("{service} {}", span.name),
    }
}

fn status_text(span: &Span) -> String {
    let code = span
        .attributes
        .get("http.response.status_code")
        .and_then(|v| v.as_u64());
    match (span.status.code == 2, code) {
        (true, Some(c)) => format!("ERR {c}"),
        (true, None) => {
            let kind = span
                .attributes
                .get("error.type")
                .and_then(|v| v.as_str())
                .unwrap_or("error");
            fit(&format!("ERR {kind}"), STATUS)
        }
        (false, Some(c)) => c.to_string(),
        (false, None) => "ok".into(),
    }
}

/// `0 ms ... 12.3 ms` across the bar columns.
fn axis(width: usize, total: std::time::Duration) -> String {
    let end = crate::supervisor::health::ms(total);
    let start = "0 ms";
    let gap = width.saturating_sub(start.len() + end.len()).max(1);
    format!("{start}{}{end}", " ".repeat(gap))
}

fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width - 1).collect();
        t.push('…');
        t
    }
}

/// Spans in tree order with their depth; spans whose parent was never recorded (a service that
/// crashed mid-trace) are shown at the top level and marked.
pub(crate) fn ordered(trace: &Trace) -> Vec<(&Span, usize, bool)> {
    let mut children: HashMap<&str, Vec<&Span>> = HashMap::new();
    let mut roots = Vec::new();
    for s in &trace.spans {
        match &s.parent_span_id {
            Some(p) if trace.has_parent(s) => children.entry(p.as_str()).or_default().push(s),
            _ => roots.push(s),
        }
    }
    let first_root = roots.first().map(|s| s.span_id.clone());
    let mut out = Vec::new();
    fn walk<'a>(
        s: &'a Span,
        depth: usize,
        orphan: bool,
        children: &HashMap<&str, Vec<&'a Span>>,
        out: &mut Vec<(&'a Span, usize, bool)>,
    ) {
        out.push((s, depth, orphan));
        for c in children.get(s.span_id.as_str()).into_iter().flatten() {
            walk(c, depth + 1, false, children, out);
        }
    }
    for r in roots {
        // Only the first root is the request itself; another root's parent was lost.
        let orphan = r.parent_span_id.is_some() && Some(&r.span_id) != first_root.as_ref();
        walk(r, 0, orphan, &children, &mut out);
    }
    out
}

/// From the root, the child that finished last, and so on down: what the request waited for.
pub(crate) fn critical_path(trace: &Trace) -> HashSet<String> {
    let mut path = HashSet::new();
    let Some(mut current) = trace.root() else {
        return path;
    };
    loop {
        path.insert(current.span_id.clone());
        let next = trace
            .spans
            .iter()
            .filter(|s| s.parent_span_id.as_deref() == Some(current.span_id.as_str()))
            .max_by_key(|s| s.end_time_unix_nano);
        match next {
            Some(n) => current = n,
            None => return path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msctl_contract::span::{KIND_SERVER, Resource, SpanStatus};
    use serde_json::{Map, json};

    #[allow(clippy::too_many_arguments)]
    fn span(
        id: &str,
        parent: Option<&str>,
        service: &str,
        kind: u8,
        name: &str,
        start: u64,
        end: u64,
        failed: bool,
    ) -> Span {
        let mut attributes = Map::new();
        if kind == KIND_CLIENT {
            attributes.insert("peer.service".into(), json!("posts"));
        }
        if failed {
            attributes.insert("error.type".into(), json!("timeout"));
        } else {
            attributes.insert("http.response.status_code".into(), json!(200));
        }
        Span {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_string),
            name: name.into(),
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            status: SpanStatus {
                code: if failed { 2 } else { 0 },
                message: None,
            },
            attributes,
            resource: Resource {
                service_name: service.into(),
                service_instance_id: format!("{service}-1"),
            },
            events: Vec::new(),
            trace_state: None,
        }
    }

    #[test]
    fn a_crashed_service_leaves_its_spans_visible_errors_marked_and_the_path_starred() {
        console::set_colors_enabled(false);
        let spans = vec![
            span(
                "a000000000000001",
                None,
                "msctl",
                KIND_CLIENT,
                "GET",
                0,
                10_000_000,
                false,
            ),
            span(
                "a000000000000002",
                Some("a000000000000001"),
                "gateway",
                KIND_SERVER,
                "GET /users/{id}/posts",
                1_000_000,
                9_000_000,
                false,
            ),
            span(
                "a000000000000003",
                Some("a000000000000002"),
                "gateway",
                KIND_CLIENT,
                "GET /posts",
                2_000_000,
                8_000_000,
                true,
            ),
            // posts crashed before writing its server span: its own call's parent is lost.
            span(
                "a000000000000005",
                Some("a000000000000004"),
                "posts",
                KIND_CLIENT,
                "GET /users/{id}",
                3_000_000,
                4_000_000,
                false,
            ),
        ];
        let trace = Trace {
            id: spans[0].trace_id.clone(),
            spans,
        };
        let text = render(&trace, 80);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{text}");
        let row = |needle: &str| {
            *lines
                .iter()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
        };
        assert!(
            row("gateway → posts GET /posts").contains("ERR timeout"),
            "{text}"
        );
        assert!(
            row("gateway → posts GET /posts").starts_with('*'),
            "the slow failed call is on the critical path:\n{text}"
        );
        assert!(
            row("(orphan) posts → posts GET").starts_with("  (orphan)"),
            "{text}"
        );
        assert!(row("msctl → posts GET").starts_with('*'));
        // Indentation follows the tree.
        assert!(
            row("gateway GET /users/{id}/posts").starts_with("*   gateway"),
            "{text}"
        );
    }
}
