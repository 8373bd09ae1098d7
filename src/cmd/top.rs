//! `msctl top`: requests per second, error rate and p50/p95/p99 latency per service and route,
//! from the server spans of the last window, refreshed in place (or one snapshot with `--json`,
//! or when stdout is not a terminal).

use crate::cli::TopArgs;
use crate::cmd::Context;
use crate::error::MsctlError;
use crate::telemetry::store::{ServerSpan, Store};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// How often the live table is redrawn.
const REFRESH: Duration = Duration::from_secs(1);

pub async fn top(ctx: &Context, args: TopArgs) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    crate::traces::check_store(&project)?;
    let window = crate::config::parse_duration(&args.window)
        .filter(|w| !w.is_zero())
        .ok_or_else(|| {
            MsctlError::Usage(format!(
                "`{}` is not a window such as 10s or 1m",
                args.window
            ))
        })?;
    let snapshot = || {
        let now = msctl_contract::span::unix_nanos(SystemTime::now());
        let since = now.saturating_sub(window.as_nanos() as u64);
        let spans = Store::open_read(&project.telemetry_db())
            .and_then(|s| s.server_spans_since(since).ok())
            .unwrap_or_default();
        rows(&spans, window)
    };
    let live = console::Term::stdout().is_term() && !args.json;
    if !live {
        let rows = snapshot();
        if args.json {
            let list: Vec<_> = rows.iter().map(Row::json).collect();
            outln!("{}", serde_json::to_string_pretty(&list)?)?;
        } else {
            outln!("{}", render(&rows, window))?;
        }
        return Ok(0);
    }
    let term = console::Term::stdout();
    let mut drawn = 0;
    loop {
        let text = render(&snapshot(), window);
        // Redrawn in place: the previous table's lines are cleared first.
        term.clear_last_lines(drawn)?;
        term.write_line(&text)?;
        drawn = text.lines().count();
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

/// The `p`th percentile of weighted durations by nearest rank: the smallest duration with at
/// least p% of the weight at or below it. `None` when there are none.
pub fn percentile(durations: &mut [(u64, f64)], p: f64) -> Option<u64> {
    durations.sort_unstable_by_key(|d| d.0);
    let total: f64 = durations.iter().map(|d| d.1).sum();
    let wanted = p / 100.0 * total;
    let mut seen = 0.0;
    for (d, w) in durations.iter() {
        seen += w;
        // A little slack, so that sums of tenths reach the rank they should.
        if seen >= wanted - 1e-9 * total {
            return Some(*d);
        }
    }
    durations.last().map(|d| d.0)
}

/// One service and route over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub service: String,
    pub route: String,
    pub requests: usize,
    pub per_second: f64,
    pub error_rate: f64,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
}

impl Row {
    pub fn json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        json!({
            "service": self.service,
            "route": self.route,
            "requests": self.requests,
            "rps": self.per_second,
            "error_rate": self.error_rate,
            "p50_ms": ms(self.p50),
            "p95_ms": ms(self.p95),
            "p99_ms": ms(self.p99),
        })
    }
}

/// The figures per service and route, busiest first.
pub fn rows(spans: &[ServerSpan], window: Duration) -> Vec<Row> {
    let mut groups: BTreeMap<(&str, &str), Vec<&ServerSpan>> = BTreeMap::new();
    for s in spans {
        groups.entry((&s.service, &s.name)).or_default().push(s);
    }
    let mut rows: Vec<Row> = groups
        .into_iter()
        .map(|((service, route), spans)| {
            // A span of a sampled trace stands for as many requests as its weight says.
            let mut durations: Vec<(u64, f64)> =
                spans.iter().map(|s| (s.duration_ns, s.weight)).collect();
            let total: f64 = durations.iter().map(|d| d.1).sum();
            // Folded from +0.0: an empty f64 sum is -0.0, which would print as "-0".
            let errors = spans
                .iter()
                .filter(|s| s.error)
                .fold(0.0, |sum, s| sum + s.weight);
            let pct = |d: &mut [(u64, f64)], p: f64| {
                Duration::from_nanos(percentile(d, p).unwrap_or_default())
            };
            Row {
                service: service.to_string(),
                route: route.to_string(),
                requests: total.round() as usize,
                per_second: total / window.as_secs_f64(),
                error_rate: errors / total,
                p50: pct(&mut durations, 50.0),
                p95: pct(&mut durations, 95.0),
                p99: pct(&mut durations, 99.0),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.service.cmp(&b.service)));
    rows
}

fn render(rows: &[Row], window: Duration) -> String {
    if rows.is_empty() {
        return format!(
            "no requests in the last {}; make some, for example `msctl call users/1/posts`",
            humantime::format_duration(window)
        );
    }
    let ms = crate::supervisor::health::ms;
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.service.clone(),
                r.route.clone(),
                format!("{:.1}", r.per_second),
                format!("{:.1}%", r.error_rate * 100.0),
                ms(r.p50),
                ms(r.p95),
                ms(r.p99),
            ]
        })
        .collect();
    format!(
        "last {} · {} requests\n{}",
        humantime::format_duration(window),
        rows.iter().map(|r| r.requests).sum::<usize>(),
        crate::table::render(
            &["SERVICE", "ROUTE", "REQ/S", "ERRORS", "P50", "P95", "P99"],
            &table
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(service: &str, name: &str, ms: u64, error: bool) -> ServerSpan {
        ServerSpan {
            service: service.into(),
            name: name.into(),
            duration_ns: ms * 1_000_000,
            error,
            weight: 1.0,
        }
    }

    #[test]
    fn red_figures_per_service_and_route() {
        let mut spans: Vec<ServerSpan> = (1..=100)
            .map(|ms| span("users", "GET /users/{id}", ms, ms > 90))
            .collect();
        spans.push(span("posts", "GET /posts", 7, false));
        let rows = rows(&spans, Duration::from_secs(10));
        assert_eq!(rows.len(), 2);
        let users = &rows[0];
        assert_eq!((users.service.as_str(), users.requests), ("users", 100));
        assert_eq!(users.per_second, 10.0);
        assert!((users.error_rate - 0.10).abs() < 1e-9);
        assert_eq!(users.p50, Duration::from_millis(50));
        assert_eq!(users.p95, Duration::from_millis(95));
        assert_eq!(users.p99, Duration::from_millis(99));
        let posts = &rows[1];
        assert_eq!(
            (posts.p50, posts.p99),
            (Duration::from_millis(7), Duration::from_millis(7))
        );
        assert_eq!(posts.error_rate, 0.0);
        assert!(posts.error_rate.is_sign_positive(), "never -0");
    }

    #[test]
    fn sampled_spans_count_as_many_requests_as_they_stand_for() {
        // One fast request seen once, and slow ones sampled at 1 in 10: 1 + 9×10 = 91 requests.
        let mut spans = vec![span("users", "GET /users/{id}", 1, false)];
        for ms in 0..9 {
            let mut s = span("users", "GET /users/{id}", 100 + ms, ms == 0);
            s.weight = 10.0;
            spans.push(s);
        }
        let rows = rows(&spans, Duration::from_secs(1));
        let users = &rows[0];
        assert_eq!(users.requests, 91);
        assert!((users.per_second - 91.0).abs() < 1e-9);
        assert!((users.error_rate - 10.0 / 91.0).abs() < 1e-9);
        assert_eq!(users.p50, Duration::from_millis(104), "the weighted median");
        assert!(
            users.p50 > Duration::from_millis(1),
            "not the unweighted one"
        );
    }

    #[test]
    fn weighted_percentiles_by_nearest_rank() {
        let mut d = vec![(3, 1.0), (1, 1.0), (2, 2.0)];
        assert_eq!(percentile(&mut d, 25.0), Some(1));
        assert_eq!(percentile(&mut d, 50.0), Some(2));
        assert_eq!(percentile(&mut d, 75.0), Some(2));
        assert_eq!(percentile(&mut d, 76.0), Some(3));
        assert_eq!(percentile(&mut [], 50.0), None);
    }
}
