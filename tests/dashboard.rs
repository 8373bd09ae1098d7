//! The web dashboard in a real headless Chromium (Debian's chromium and chromium-driver, through
//! WebDriver): live services with actions, traces appearing without a reload, log filters, the
//! service map; and its guard against requests without the session or from a foreign Host.
//! Screenshots of every page are saved under target/dashboard-screenshots/.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

fn dashboard_url(p: &TestProject) -> String {
    let out = p.msctl().args(["dashboard", "--no-open"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn base(url: &str) -> String {
    url.split("/?").next().unwrap().to_string()
}

#[test]
fn the_dashboard_shows_the_system_live_and_acts_on_it() {
    let p = TestProject::sample();
    let stderr = p.up();
    let url = dashboard_url(&p);
    assert!(
        stderr.contains(&format!("dashboard: {url}")),
        "up prints it: {stderr}"
    );
    let browser = Browser::start();
    browser.goto(&url);

    // Services: three healthy instances; restart users and see its restart count change.
    let states = browser.wait_for(
        "three healthy instances",
        "const s = [...document.querySelectorAll('#services tr[data-instance] .state')].map(e => e.textContent);
         return s.length === 3 && s.every(x => x === 'healthy') ? s : null;",
    );
    assert_eq!(states.as_array().unwrap().len(), 3);
    // Each running instance's memory and CPU time, as `ps` shows them.
    let memory = browser.eval(
        "return [...document.querySelectorAll('#services tr[data-instance] .mem')].map(e => e.textContent)",
    );
    assert!(
        memory
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.as_str().is_some_and(|m| m.ends_with('M') && m != "0.0M")),
        "{memory}"
    );
    assert!(
        !browser
            .eval("return location.search")
            .as_str()
            .unwrap()
            .contains("token"),
        "the token leaves the address once the page keeps it"
    );
    browser.screenshot("services");
    let restarts = "document.querySelector('tr[data-instance=\"users-1\"] .restarts').textContent";
    assert_eq!(browser.eval(&format!("return {restarts}")), "0");
    browser.click("button[data-action='restart'][data-service='users']");
    browser.wait_for(
        "the restart to be reported",
        "return document.querySelector('#action-result.ok')?.textContent.includes('restart done')",
    );
    browser.wait_for(
        "users-1's restart count to change without a reload",
        &format!("return {restarts} === '1' ? true : null"),
    );
    assert_eq!(p.instance("users-1").unwrap()["restarts"], 1);

    // Traces: a call appears in the open list without a reload; its waterfall has the spans
    // the terminal shows, across msctl, the gateway, users and posts.
    browser.click("nav a[data-page='traces']");
    browser.wait_for(
        "the traces page",
        "return document.querySelector('#page-traces.active')",
    );
    let marker = browser.eval("window.__same_page = 'yes'; return 1");
    assert_eq!(marker, 1);
    let answer = call_json(&p, &["users/1/posts"]);
    let id = answer["trace_id"].as_str().unwrap().to_string();
    let spans = wait_until(Duration::from_secs(10), "the whole trace stored", || {
        trace_spans(&p, &id).filter(|s| s.len() >= 6)
    });
    let row = format!("#traces tr[data-trace='{id}']");
    browser.wait_for(
        "the call in the trace list",
        &format!("return document.querySelector(\"{row}\")"),
    );
    assert_eq!(
        browser.eval("return window.__same_page ?? null"),
        "yes",
        "no reload happened"
    );
    browser.click(&row);
    let shown = browser.wait_for(
        "the waterfall",
        &format!(
            "return document.querySelectorAll('#waterfall .span-row').length === {} ? [...document.querySelectorAll('#waterfall .span-row')].map(r => r.dataset.service) : null",
            spans.len()
        ),
    );
    let mut services: Vec<&str> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    services.sort();
    services.dedup();
    assert_eq!(services, ["gateway", "msctl", "posts", "users"]);
    browser.click("#waterfall .span-row[data-service='posts']");
    browser.wait_for(
        "a span's attributes",
        "return document.querySelector('#span-detail pre')?.textContent.includes('http')",
    );
    browser.screenshot("trace");

    // Logs: filtered by service and by level.
    browser.click("nav a[data-page='logs']");
    browser.wait_for(
        "the services in the log filter",
        "return [...document.querySelectorAll('#log-service option')].some(o => o.value === 'users')",
    );
    browser.eval("const s = document.querySelector('#log-service'); s.value = 'users'; s.dispatchEvent(new Event('change')); return 1");
    let only_users = browser.wait_for(
        "only users' lines",
        "const r = [...document.querySelectorAll('#logs .log-row')]; return r.length > 0 && r.every(x => x.dataset.service === 'users') ? r.length : null",
    );
    assert!(only_users.as_u64().unwrap() > 0);
    browser.screenshot("logs");
    // By level: `info` shows only info lines; `error` none, as none was logged.
    let level = |l: &str| {
        browser.eval(&format!(
            "const s = document.querySelector('#log-service'); s.value = ''; const l = document.querySelector('#log-level'); l.value = '{l}'; l.dispatchEvent(new Event('change')); return 1"
        ));
    };
    level("info");
    let info = browser.wait_for(
        "only info lines",
        "const r = [...document.querySelectorAll('#logs .log-row')]; return r.length > 0 && r.every(x => x.dataset.level === 'info') && r.some(x => x.dataset.service !== 'users') ? r.length : null",
    );
    assert!(info.as_u64().unwrap() > only_users.as_u64().unwrap());
    level("error");
    browser.wait_for(
        "no lines under the error filter",
        "return document.querySelectorAll('#logs .log-row').length === 0",
    );

    // The service map: an edge for each pair that called each other, and none other.
    browser.click("nav a[data-page='map']");
    let edges = browser.wait_for(
        "the map's edges",
        "const e = [...document.querySelectorAll('#map g.edge')].map(g => g.dataset.from + '>' + g.dataset.to); return e.length ? e.sort() : null",
    );
    assert_eq!(
        edges,
        serde_json::json!(["gateway>posts", "gateway>users", "msctl>gateway"]),
        "the calls made: msctl → gateway → users and posts"
    );
    let nodes = browser
        .eval("return [...document.querySelectorAll('#map g.node')].map(g => g.dataset.id).sort()");
    assert_eq!(
        nodes,
        serde_json::json!(["gateway", "msctl", "posts", "users"])
    );
    browser.screenshot("map");

    // Metrics: a chart per service and route that served requests.
    browser.click("nav a[data-page='metrics']");
    let charts = browser.wait_for(
        "charts",
        "const c = [...document.querySelectorAll('#metrics .chart')].map(c => c.dataset.key); return c.length ? c : null",
    );
    assert!(
        charts
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "gateway GET /users/{id}/posts"),
        "{charts}"
    );
    assert!(
        browser
            .eval("return document.querySelectorAll('#metrics canvas').length")
            .as_u64()
            .unwrap()
            > 0
    );
    browser.screenshot("metrics");
}

#[test]
fn without_the_token_or_from_a_foreign_host_nothing_is_shown_and_nothing_runs() {
    let p = TestProject::sample();
    p.up();
    let url = dashboard_url(&p);
    let base = base(&url);
    let token = url.rsplit("token=").next().unwrap().to_string();
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let status = |r: reqwest::blocking::RequestBuilder| r.send().unwrap().status().as_u16();
    // The page holds no data and no token: anyone reaching the port gets it.
    let page = client.get(format!("{base}/")).send().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers().get("set-cookie").is_none(), "no cookie");
    assert!(!page.text().unwrap().contains(&token));
    // The API needs the token in its header, and nothing else will do: no token, a wrong one,
    // the token in the address (except for the event stream), or a cookie.
    for request in [
        client.get(format!("{base}/api/overview")),
        client
            .get(format!("{base}/api/overview"))
            .header("x-msctl-token", "wrong"),
        client.get(format!("{base}/api/overview?token={token}")),
        client
            .get(format!("{base}/api/overview"))
            .header("cookie", format!("msctl_session={token}")),
        client.get(format!("{base}/api/live")),
        client.post(format!("{base}/api/services/users/restart")),
        client
            .post(format!("{base}/api/services/users/restart"))
            .header("cookie", format!("msctl_session={token}")),
    ] {
        assert_eq!(status(request), 401);
    }
    assert_eq!(
        p.instance("users-1").unwrap()["restarts"],
        0,
        "no action ran"
    );
    assert_eq!(
        status(
            client
                .get(format!("{base}/api/overview"))
                .header("x-msctl-token", &token)
        ),
        200
    );
    let live = client
        .get(format!("{base}/api/live?token={token}"))
        .send()
        .unwrap();
    assert_eq!(live.status().as_u16(), 200);
    drop(live);
    // A foreign Host (DNS rebinding) is refused even with the token.
    for host in ["evil.example", "127.0.0.1.nip.io", "localhost"] {
        assert_eq!(
            status(
                client
                    .get(format!("{base}/api/overview"))
                    .header("x-msctl-token", &token)
                    .header("host", host)
            ),
            403,
            "{host}"
        );
    }
    // With the token, the action runs.
    let done: Value = client
        .post(format!("{base}/api/services/users/restart"))
        .header("x-msctl-token", &token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(p.instance("users-1").unwrap()["restarts"], 1);
    // An action that cannot be done is a client error, with the reason.
    let refused = client
        .post(format!("{base}/api/services/users/scale?replicas=100000"))
        .header("x-msctl-token", &token)
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    let body: Value = refused.json().unwrap();
    assert_eq!(body["ok"], false, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("more than msctl runs"),
        "{body}"
    );
}

#[test]
fn the_service_map_draws_the_bus_from_publisher_to_consumer() {
    let p = TestProject::sample_with_bus();
    p.up();
    let out = p
        .msctl()
        .args(["call", "--json", "DELETE", "users/4"])
        .output()
        .unwrap();
    let id = stdout_json(&out)["trace_id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(30), "the event to be applied", || {
        trace_spans(&p, &id).filter(|s| s.iter().any(|s| s["kind"] == 5))
    });
    let browser = Browser::start();
    browser.goto(&format!("{}#map", dashboard_url(&p)));
    browser.click("nav a[data-page='map']");
    let edges = browser.wait_for(
        "the bus on the map",
        "const e = [...document.querySelectorAll('#map g.edge')].map(g => g.dataset.from + '>' + g.dataset.to); return e.includes('users>bus:user.deleted') ? e.sort() : null",
    );
    assert_eq!(
        edges,
        serde_json::json!([
            "bus:user.deleted>posts",
            "gateway>users",
            "msctl>gateway",
            "users>bus:user.deleted"
        ])
    );
    assert_eq!(
        browser.eval("return document.querySelector(\"#map g.node[data-id='bus:user.deleted']\").classList.contains('subject')"),
        true
    );
    browser.screenshot("map-with-bus");
    // The deletion's trace shows the producer and consumer spans as such.
    browser.goto(&format!("{}/#traces/{id}", base(&dashboard_url(&p))));
    let kinds = browser.wait_for(
        "the event's spans in the waterfall",
        "const k = [...document.querySelectorAll('#waterfall .span-row')].map(r => r.dataset.kind); return k.includes('consumer') ? k : null",
    );
    let kinds: Vec<&str> = kinds
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"producer"), "{kinds:?}");
    browser.screenshot("trace-with-event");
}
