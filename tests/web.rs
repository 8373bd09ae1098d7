//! The sample system's UI layer (the `web` service, reached at the gateway's address) in a real
//! headless Chromium: listing, opening and creating through the gateway, a validation error as
//! the service words it, a name that is markup shown as text, traces that start at the click
//! and reach the database, deleting a user with their posts removed by the bus, and the
//! partial-answer banner with posts stopped. Screenshots of each view go to
//! target/web-screenshots/.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const WEB: &str = r#"
[services.web]
command = ["{bin}/web"]
"#;
const SHOTS: &str = "web-screenshots";

/// The app's address, as `msctl open` prints it.
fn app_url(p: &TestProject) -> String {
    let out = p.msctl().args(["open", "--no-open"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Fills a form's fields (by name) and submits it with its button, as a user would.
fn submit(browser: &Browser, form: &str, fields: &[(&str, &str)]) {
    let values = serde_json::to_string(&fields).unwrap();
    browser.eval(&format!(
        "for (const [k, v] of {values}) document.querySelector('#{form} [name=' + k + ']').value = v; return 1"
    ));
    browser.click(&format!("#{form} button[type=submit]"));
}

fn footer_trace(browser: &Browser) -> String {
    browser
        .eval("return document.getElementById('footer').dataset.traceId || ''")
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_app_lists_opens_and_creates_through_the_gateway_with_traces_from_the_click() {
    let p = TestProject::new(&format!("{SAMPLE}{WEB}"));
    let stderr = p.up();
    let url = app_url(&p);
    assert!(stderr.contains(&format!("app: {url}")), "{stderr}");
    let browser = Browser::start();
    browser.goto(&url);

    // The list, through the gateway: the page's origin is the gateway's.
    let names = browser.wait_for(
        "the users list",
        "const r = [...document.querySelectorAll('#users tbody td:first-child')].map(e => e.textContent);
         return r.length ? r : null",
    );
    assert!(
        names
            .as_array()
            .unwrap()
            .contains(&Value::from("Ada Lovelace")),
        "{names}"
    );
    assert_eq!(
        browser.eval("return location.origin + location.pathname"),
        format!("{url}web/")
    );
    browser.screenshot_to(SHOTS, "users");

    // A validation error, worded as users words it.
    submit(
        &browser,
        "new-user",
        &[("name", "Alan Turing"), ("email", "not-an-email")],
    );
    let shown = browser.wait_for(
        "the validation error",
        "return document.getElementById('user-error')?.textContent || null",
    );
    let direct = http()
        .post(format!("{url}users"))
        .json(&json!({"name": "Alan Turing", "email": "not-an-email"}))
        .send()
        .unwrap();
    assert_eq!(direct.status(), 422);
    let direct: Value = direct.json().unwrap();
    assert_eq!(shown, direct["error"]["message"]);
    browser.screenshot_to(SHOTS, "validation-error");

    // Created; a name that is markup is shown as that text, and nothing runs.
    let xss = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\">";
    submit(
        &browser,
        "new-user",
        &[("name", xss), ("email", "xss@example.com")],
    );
    let cell = browser.wait_for(
        "the new user in the list",
        "const td = [...document.querySelectorAll('#users tbody td:first-child')].find(e => e.textContent.includes('__xss'));
         return td ? {text: td.textContent, html: td.innerHTML} : null",
    );
    assert_eq!(cell["text"], xss);
    assert!(
        cell["html"].as_str().unwrap().contains("&lt;script&gt;"),
        "{cell}"
    );
    assert_eq!(
        browser.eval("return [window.__xss === undefined, document.querySelectorAll('main script, main img').length]"),
        json!([true, 0])
    );
    browser.screenshot_to(SHOTS, "markup-as-text");

    // A user's page with their posts; a post created there.
    browser.click("a[href='#/users/1']");
    browser.wait_for(
        "Ada's page with her posts",
        "return document.getElementById('user-name')?.textContent === 'Ada Lovelace'
             && document.querySelectorAll('#posts article').length === 3",
    );
    submit(
        &browser,
        "new-post",
        &[
            ("title", "From the browser"),
            ("body", "a <b>bold</b> claim"),
        ],
    );
    browser.wait_for(
        "the new post",
        "return [...document.querySelectorAll('#posts article h3')].some(h => h.textContent === 'From the browser')",
    );
    browser.screenshot_to(SHOTS, "user");

    // The footer's trace is stored, starting at the click (web) and reaching the database.
    let id = footer_trace(&browser);
    assert_eq!(id.len(), 32, "{id}");
    let shown = browser.eval("return document.getElementById('traceparent').textContent");
    assert!(shown.as_str().unwrap().contains(&id), "{shown}");
    let link = browser.eval("return document.getElementById('trace-link').href");
    assert!(
        link.as_str().unwrap().ends_with(&format!("/#traces/{id}")),
        "{link}"
    );
    // The link opens that trace in the dashboard, once the dashboard has been opened in this
    // browser (its token is kept per origin).
    let out = p.msctl().args(["dashboard", "--no-open"]).output().unwrap();
    browser.goto(String::from_utf8_lossy(&out.stdout).trim());
    browser.goto(link.as_str().unwrap());
    browser.wait_for(
        "the trace in the dashboard",
        "const n = document.getElementById('span-count'); return n && Number(n.textContent) >= 6 ? n.textContent : null",
    );
    browser.screenshot_to(SHOTS, "trace-in-dashboard");
    let listed = wait_until(Duration::from_secs(10), "the trace in msctl traces", || {
        let out = p
            .msctl()
            .args(["traces", "--json", "--limit", "50"])
            .output()
            .unwrap();
        let all: Value = serde_json::from_slice(&out.stdout).ok()?;
        all.as_array()?
            .iter()
            .find(|t| t["trace_id"] == id.as_str())
            .cloned()
    });
    assert_eq!(listed["trace_id"], id.as_str());
    let spans = p.wait_until("the last trace, from the click to the database", |p| {
        let spans = trace_spans(p, "last")?;
        let root = spans.iter().find(|s| s.get("parentSpanId").is_none())?;
        let db = spans
            .iter()
            .any(|s| s["attributes"]["db.system.name"] == "sqlite");
        (root["resource"]["service.name"] == "web" && db).then_some(spans)
    });
    let services = services_of(&spans);
    for s in ["web", "gateway", "users", "posts"] {
        assert!(services.contains(&s), "{s} in {services:?}");
    }
}

#[test]
fn deleting_a_user_removes_their_posts_once_the_event_is_applied() {
    let p = TestProject::new(&format!("{SAMPLE}{BROKER}{WEB}"));
    nats_server();
    p.up();
    let url = app_url(&p);
    let browser = Browser::start();
    browser.goto(&format!("{url}web/#/users/2"));
    browser.wait_for(
        "the user's posts",
        "return document.querySelectorAll('#posts article').length === 3",
    );
    browser.click("#delete-user");
    browser.wait_for(
        "the posts gone without a reload",
        "return document.getElementById('notice')?.dataset.done === 'true'
             && document.querySelectorAll('#posts article').length === 0",
    );
    assert_eq!(
        browser.eval("return document.getElementById('notice').textContent"),
        "User deleted, and their posts are gone: posts applied user.deleted."
    );
    browser.screenshot_to(SHOTS, "deleted");
    let (status, body) = get_json(&format!("{url}posts?user_id=2"));
    assert_eq!(status, 200);
    assert_eq!(body["posts"].as_array().map(Vec::len), Some(0), "{body}");
    let (status, _) = get_json(&format!("{url}users/2"));
    assert_eq!(status, 404);
}

#[test]
fn a_banner_says_what_is_missing_when_posts_is_down() {
    let p = TestProject::new(&format!("{SAMPLE}{WEB}"));
    p.up();
    let out = p.msctl().args(["stop", "posts"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = app_url(&p);
    let browser = Browser::start();
    browser.goto(&format!("{url}web/#/users/1"));
    let banner = browser.wait_for(
        "the partial-answer banner",
        "const b = document.getElementById('banner');
         return !b.hidden && b.textContent ? b.textContent : null",
    );
    let banner = banner.as_str().unwrap();
    assert!(
        banner.starts_with("Part of this page is missing") && banner.contains("posts"),
        "{banner}"
    );
    assert_eq!(
        browser.eval("return [document.getElementById('user-name').textContent, document.getElementById('no-posts').textContent]"),
        json!(["Ada Lovelace", "posts are unavailable right now"])
    );
    browser.screenshot_to(SHOTS, "partial");
}
