//! Watch mode: from saving a one-line change in users to the new code answering through the
//! gateway, split into debounce, build and swap as msctl reports them, against a plain
//! `cargo build -p users` of the same kind of change on the same copy and target folder.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIB: &str = "services/users/src/lib.rs";
const ANCHOR: &str = r#""total": total,"#;
const CRATES: [&str; 5] = [
    "contract",
    "services/kit",
    "services/users",
    "services/posts",
    "services/gateway",
];

pub fn run(runs: usize) {
    let bins = release_bins();
    let msctl = bins.join("msctl");
    let copy = tempfile::Builder::new()
        .prefix("msctl-watch-bench-")
        .tempdir()
        .expect("temp dir");
    let dir = copy.path();
    // The copy builds into a target folder of its own that outlives it: the dependencies stay
    // built from one run of the benchmark to the next, as they would on a developer's machine.
    let target = root().join("target/watch-bench");
    make_copy(dir, &target);
    let lib = dir.join(LIB);
    let original = std::fs::read_to_string(&lib).expect("users' lib.rs");
    println!("watch: a one-line change in users, saved under `msctl up -d --watch`; {runs} runs");
    println!("(first build of the copy may take a few minutes)");
    let up = Command::new(&msctl)
        .args(["up", "-d", "--watch"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .stderr(Stdio::inherit())
        .status()
        .is_ok_and(|s| s.success());
    assert!(up, "msctl up -d --watch failed");
    let down = Down(msctl.clone(), dir.to_path_buf());
    let registry: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(".msctl/registry.json")).expect("registry"),
    )
    .expect("registry JSON");
    let gateway = registry["services"]["gateway"]["instances"][0]["address"]
        .as_str()
        .expect("gateway address")
        .to_string();
    let log = dir.join(".msctl/watch.log");
    let mut rows = Vec::new();
    let (mut firsts, mut alls, mut builds) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let seen = cycles(&log).len();
        let marker = format!(r#""rev": {run},"#);
        std::fs::write(
            &lib,
            original.replacen(ANCHOR, &format!("{ANCHOR} {marker}"), 1),
        )
        .expect("lib.rs written");
        let saved = Instant::now();
        let needle = format!(r#""rev":{run},"#);
        let (first, all) = served(&gateway, &needle, saved);
        let cycle = wait_for(|| cycles(&log).get(seen).cloned(), Duration::from_secs(300));
        assert_eq!(cycle["outcome"], "replaced", "{cycle}");
        let figure = |k: &str| Duration::from_millis(cycle[k].as_u64().unwrap_or(0));
        builds.push(figure("build_ms"));
        firsts.push(first);
        alls.push(all);
        rows.push(vec![
            run.to_string(),
            ms(first),
            ms(all),
            ms(figure("debounce_ms")),
            ms(figure("build_ms")),
            ms(figure("swap_ms")),
            cycle["failed_requests"].to_string(),
        ]);
    }
    drop(down);
    print_table(
        &[
            "run",
            "save → new code answers",
            "→ only new code",
            "debounce",
            "build",
            "swap",
            "failed requests",
        ],
        &rows,
    );
    // The same kind of change, built by hand.
    let mut plain = Vec::new();
    for run in 1..=runs {
        std::fs::write(
            &lib,
            original.replacen(ANCHOR, &format!(r#"{ANCHOR} "plain": {run},"#), 1),
        )
        .expect("lib.rs written");
        let started = Instant::now();
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "users"])
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cargo build -p users failed");
        plain.push(started.elapsed());
    }
    std::fs::write(&lib, &original).expect("lib.rs restored");
    let (first, all, build, plain) = (median(firsts), median(alls), median(builds), median(plain));
    println!();
    print_table(
        &["median", "value"],
        &[
            vec!["save → new code answers".into(), ms(first)],
            vec!["save → only new code answers".into(), ms(all)],
            vec!["msctl's build (cargo build -p users)".into(), ms(build)],
            vec!["plain `cargo build -p users`".into(), ms(plain)],
            vec![
                "save → new code answers / plain build".into(),
                format!("{:.2}×", first.as_secs_f64() / plain.as_secs_f64()),
            ],
            vec![
                "watch overhead over the plain build".into(),
                ms(first.saturating_sub(plain)),
            ],
        ],
    );
}

/// `msctl down` when the benchmark ends, even by a panic.
struct Down(PathBuf, PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(&self.0)
            .arg("down")
            .current_dir(&self.1)
            .stderr(Stdio::null())
            .status();
    }
}

/// Polls the users list through the gateway: when the first answer holding `needle` came, and
/// when 20 answers in a row have (the old instance is out of rotation).
fn served(gateway: &str, needle: &str, saved: Instant) -> (Duration, Duration) {
    let addr: std::net::SocketAddr = gateway.parse().expect("an address");
    let mut first = None;
    let mut streak = 0;
    let deadline = saved + Duration::from_secs(300);
    while Instant::now() < deadline {
        let body = get(addr, "/users?limit=1").unwrap_or_default();
        if body.contains(needle) {
            first.get_or_insert_with(|| saved.elapsed());
            streak += 1;
            if streak == 20 {
                return (first.unwrap_or_default(), saved.elapsed());
            }
        } else {
            streak = 0;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the new code was not served within 300 s");
}

/// One GET over a fresh connection; the body.
fn get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

fn cycles(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_for<T>(mut check: impl FnMut() -> Option<T>, limit: Duration) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sample system's crates in a workspace of their own at `dir`, run from `target`.
fn make_copy(dir: &Path, target: &Path) {
    let repo = root();
    for krate in CRATES {
        copy_tree(&repo.join(krate), &dir.join(krate));
    }
    std::fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock")).expect("Cargo.lock copied");
    let mut manifest: toml_edit::DocumentMut = std::fs::read_to_string(repo.join("Cargo.toml"))
        .expect("Cargo.toml")
        .parse()
        .expect("Cargo.toml parses");
    // The workspace tables only: the root package (msctl) is not part of the copy.
    for table in ["package", "dependencies", "dev-dependencies", "lints"] {
        manifest.remove(table);
    }
    manifest["workspace"]["members"] = toml_edit::value(toml_edit::Array::from_iter(CRATES));
    std::fs::write(dir.join("Cargo.toml"), manifest.to_string()).expect("Cargo.toml written");
    let bin = |n: &str| format!("{}/debug/{n}", target.display());
    std::fs::write(
        dir.join("msctl.toml"),
        format!(
            r#"[defaults]
build = ["cargo", "build", "-p", "users", "-p", "posts", "-p", "gateway"]

[services.users]
command = ["{}"]

[services.posts]
command = ["{}"]

[services.gateway]
command = ["{}"]
depends_on = ["users", "posts"]
"#,
            bin("users"),
            bin("posts"),
            bin("gateway")
        ),
    )
    .expect("msctl.toml written");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("folder made");
    for entry in std::fs::read_dir(from).expect("folder read") {
        let entry = entry.expect("entry");
        if entry.file_name() == "target" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).expect("file copied");
        }
    }
}
