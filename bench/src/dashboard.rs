//! The web dashboard in headless Chromium (chromedriver): its first page load; the delay from
//! `msctl call` to the trace's row in an open traces page; and the supervisor's CPU and memory
//! during the gateway load test with the dashboard open against closed.

use crate::harness::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn run(runs: usize) {
    crate::proxy::ensure("wrk", "wrk");
    crate::proxy::ensure("chromedriver", "chromium-driver");
    let bins = release_bins();
    let system = Running::up(&bins, &sample_manifest(&bins));
    let registry = system.registry();
    let url = format!(
        "http://{}/?token={}",
        registry["supervisor"]["control"].as_str().expect("control"),
        registry["supervisor"]["dashboard_token"]
            .as_str()
            .expect("token")
    );
    let gateway = registry["services"]["gateway"]["instances"][0]["address"]
        .as_str()
        .expect("gateway")
        .to_string();
    let (supervisor, _) = system.pids();
    let browser = Chrome::start();
    println!("the dashboard, in headless Chromium; release builds; {runs} runs\n");

    // First page load: navigation to the load event, and to the services table filled in.
    let mut loads = Vec::new();
    let mut filled = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        browser.goto(&url);
        browser.wait(
            "services",
            "return document.querySelectorAll('#services tr[data-instance]').length === 3",
        );
        filled.push(started.elapsed());
        let nav = browser.eval("const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime");
        loads.push(Duration::from_secs_f64(
            nav.as_f64().unwrap_or(0.0) / 1000.0,
        ));
    }

    // A call, then its row in the open traces page.
    browser.eval("location.hash = 'traces'; return 1");
    let mut delays = Vec::new();
    for _ in 0..runs.max(5) {
        let started = Instant::now();
        let out = Command::new(&system.msctl)
            .args(["call", "--json", "users/1/posts"])
            .current_dir(system.dir.path())
            .stderr(Stdio::null())
            .output()
            .expect("msctl call");
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("call JSON");
        let id = answer["trace_id"].as_str().expect("trace id").to_string();
        browser.wait(
            "the trace's row",
            &format!("return !!document.querySelector(\"#traces tr[data-trace='{id}']\")"),
        );
        delays.push(started.elapsed());
    }

    // The supervisor under the gateway load test, dashboard closed then open.
    let load = |label: &str| {
        let cpu = cpu_time(supervisor);
        let figures = crate::proxy::wrk(&format!("http://{gateway}/users/1"));
        let used = cpu_time(supervisor) - cpu;
        let rss = rss_kib(supervisor);
        (label.to_string(), figures.rps, used, rss)
    };
    browser.goto("about:blank");
    let closed = load("dashboard closed");
    browser.goto(&url);
    browser.eval("location.hash = 'traces'; return 1");
    let open = load("dashboard open on traces");

    print_table(
        &["figure", "median", "max"],
        &[
            vec![
                "first page load (load event)".into(),
                ms(median(loads.clone())),
                ms(*loads.iter().max().unwrap()),
            ],
            vec![
                "first page, services shown".into(),
                ms(median(filled.clone())),
                ms(*filled.iter().max().unwrap()),
            ],
            vec![
                "msctl call → trace row in the open page".into(),
                ms(median(delays.clone())),
                ms(*delays.iter().max().unwrap()),
            ],
        ],
    );
    println!();
    let rows: Vec<Vec<String>> = [&closed, &open]
        .iter()
        .map(|(label, rps, cpu, rss)| {
            vec![
                label.clone(),
                format!("{rps:.0}"),
                format!("{:.0} ms", cpu.as_secs_f64() * 1000.0),
                format!("{:.1} MiB", *rss as f64 / 1024.0),
            ]
        })
        .collect();
    print_table(
        &[
            "gateway load test (wrk, 5 s)",
            "req/s",
            "supervisor CPU",
            "supervisor RSS",
        ],
        &rows,
    );
    println!(
        "\nwith the dashboard open: supervisor CPU {:+.0} ms ({:.2}×), RSS {:+.1} MiB",
        (open.2.as_secs_f64() - closed.2.as_secs_f64()) * 1000.0,
        open.2.as_secs_f64() / closed.2.as_secs_f64().max(1e-9),
        (open.3 as f64 - closed.3 as f64) / 1024.0
    );
}

/// Resident memory now, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Headless Chromium through chromedriver on a free loopback port; both end when dropped.
struct Chrome {
    client: fantoccini::Client,
    runtime: tokio::runtime::Runtime,
    driver: std::process::Child,
}

impl Chrome {
    fn start() -> Self {
        use std::os::unix::process::CommandExt;
        let port = portpicker::pick_unused_port().expect("a free port");
        let driver = Command::new("chromedriver")
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900", "--disable-dev-shm-usage"]}),
        );
        let client = runtime
            .block_on(
                fantoccini::ClientBuilder::new(
                    hyper_util::client::legacy::connect::HttpConnector::new(),
                )
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
            )
            .expect("a browser session");
        Self {
            client,
            runtime,
            driver,
        }
    }

    fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client.goto(url))
            .expect("the page loads");
    }

    fn eval(&self, script: &str) -> serde_json::Value {
        self.runtime
            .block_on(self.client.execute(script, vec![]))
            .expect("the script runs")
    }

    /// Polls `script` every 5 ms until it is true.
    fn wait(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval(script) != serde_json::Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = self.runtime.block_on(client.close());
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.driver.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.driver.wait();
    }
}
