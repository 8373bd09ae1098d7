//! The test harness: temporary projects, the binaries they run, waiting with timeouts instead of
//! sleeps, and cleanup of every process a test started, even when it fails.
#![allow(dead_code)]

use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The folder holding the built service binaries (users, posts, gateway, web, msctl-fixture).
/// They are built once per test binary; cargo makes that a no-op when they are fresh.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = StdCommand::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "users",
                "-p",
                "posts",
                "-p",
                "gateway",
                "-p",
                "web",
                "-p",
                "msctl-fixture",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the service binaries failed");
        PathBuf::from(env!("CARGO_BIN_EXE_msctl"))
            .parent()
            .expect("msctl is in a folder")
            .to_path_buf()
    })
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Polls `check` every 10 ms until it gives a value; panics naming `what` after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[allow(unused_imports)]
pub use msctl::supervisor::process::alive;

/// Sends `signal` to `pid`; a process already gone is fine.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// The sample system's msctl.toml, with `{bin}` for the binaries' folder.
pub const SAMPLE: &str = r#"
[defaults]
stop_timeout = "5s"

[services.users]
command = ["{bin}/users"]

[services.posts]
command = ["{bin}/posts"]

[services.gateway]
command = ["{bin}/gateway"]
depends_on = ["users", "posts"]
"#;

/// The sample's broker, as in the repository's msctl.toml.
pub const BROKER: &str = r#"
[services.nats]
command = ["nats-server", "-a", "127.0.0.1", "-p", "{port}", "-js", "-sd", "{data_dir}"]
health = "tcp"
optional = true
install = "apt-get install nats-server"
"#;

/// A project in a temporary folder. Dropping it stops everything that runs for it.
pub struct TestProject {
    dir: Folder,
}

/// The project's folder: owned (removed on drop) or borrowed from the test.
enum Folder {
    Owned(tempfile::TempDir),
    Borrowed(PathBuf),
}

impl TestProject {
    /// A project whose msctl.toml is `manifest`, with `{bin}` standing for the binaries' folder.
    pub fn new(manifest: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("msctl-test-")
            .tempdir()
            .expect("temp dir");
        let text = manifest.replace("{bin}", &bin_dir().display().to_string());
        std::fs::write(dir.path().join("msctl.toml"), text).expect("manifest written");
        Self {
            dir: Folder::Owned(dir),
        }
    }

    /// An empty folder outside the repository, with no msctl.toml: a project before `init`.
    pub fn empty() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("msctl-test-")
            .tempdir()
            .expect("temp dir");
        Self {
            dir: Folder::Owned(dir),
        }
    }

    /// A project in a folder the test made (and removes), with its own msctl.toml.
    pub fn at(path: &Path) -> Self {
        Self {
            dir: Folder::Borrowed(path.to_path_buf()),
        }
    }

    /// The sample system: users, posts, and the gateway in front of them.
    pub fn sample() -> Self {
        Self::new(SAMPLE)
    }

    /// The sample system with `users` instances of users and `posts` of posts.
    pub fn sample_scaled(users: u32, posts: u32) -> Self {
        let replicas = |service: &str, n: u32| {
            let command = format!("command = [\"{{bin}}/{service}\"]\n");
            (command.clone(), format!("{command}replicas = {n}\n"))
        };
        let (users_line, users_scaled) = replicas("users", users);
        let (posts_line, posts_scaled) = replicas("posts", posts);
        Self::new(
            &SAMPLE
                .replace(&users_line, &users_scaled)
                .replace(&posts_line, &posts_scaled),
        )
    }

    /// The sample system with its message bus: nats-server (installed if need be) beside it.
    pub fn sample_with_bus() -> Self {
        nats_server();
        Self::new(&format!("{SAMPLE}{BROKER}"))
    }

    pub fn path(&self) -> &Path {
        match &self.dir {
            Folder::Owned(d) => d.path(),
            Folder::Borrowed(p) => p,
        }
    }

    pub fn registry_path(&self) -> PathBuf {
        self.path().join(".msctl/registry.json")
    }

    /// `msctl` in this project's folder, without colour, bounded in time.
    pub fn msctl(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_msctl"));
        cmd.current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("CARGO_TARGET_DIR")
            .timeout(Duration::from_secs(90));
        cmd
    }

    /// The same, as a std command, for tests that must signal it while it runs.
    pub fn msctl_process(&self) -> StdCommand {
        let mut cmd = StdCommand::new(env!("CARGO_BIN_EXE_msctl"));
        cmd.current_dir(self.path()).env("NO_COLOR", "1");
        cmd
    }

    /// `msctl up -d`, which must succeed; returns its stderr.
    pub fn up(&self) -> String {
        let out = self
            .msctl()
            .args(["up", "-d"])
            .output()
            .expect("msctl runs");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "msctl up -d failed: {stderr}");
        stderr
    }

    /// `msctl up --no-build` in the foreground, output discarded, for tests that signal it.
    /// `Drop` stops it with `msctl down` if the test does not.
    pub fn up_foreground(&self) -> std::process::Child {
        self.msctl_process()
            .args(["up", "--no-build"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("msctl runs")
    }

    /// Waits until start-up is done: every instance `up` started is healthy and the supervisor
    /// has said so (a signal before then fails `up`, with exit 130).
    pub fn wait_until_ready(&self) {
        self.wait_until("the system to be ready", |p| {
            (p.registry()?["supervisor"]["phase"] == "ready").then_some(())
        });
    }

    pub fn registry(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.registry_path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The instance `id` in the registry.
    pub fn instance(&self, id: &str) -> Option<Value> {
        let reg = self.registry()?;
        reg["services"]
            .as_object()?
            .values()
            .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
            .find(|i| i["id"] == id)
    }

    pub fn pid_of(&self, id: &str) -> Option<u32> {
        self.instance(id)?["pid"].as_u64().map(|p| p as u32)
    }

    /// The pids of the instances `ids`, from the registry; panics for one with none.
    pub fn pids_of(&self, ids: &[&str]) -> Vec<u32> {
        ids.iter()
            .map(|id| self.pid_of(id).unwrap_or_else(|| panic!("{id} has no pid")))
            .collect()
    }

    /// `msctl ARGS` here, which must exit with `code`; its output. Panics with stderr otherwise.
    pub fn fails(&self, args: &[&str], code: i32) -> std::process::Output {
        let out = self.msctl().args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "msctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The same, for its stderr only.
    pub fn fails_saying(&self, args: &[&str], code: i32) -> String {
        String::from_utf8_lossy(&self.fails(args, code).stderr).into_owned()
    }

    /// `msctl ARGS` here, its stdout read as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        stdout_json(&self.msctl().args(args).output().unwrap())
    }

    /// The running supervisor's pid, from the registry; panics when there is none.
    pub fn supervisor_pid(&self) -> u32 {
        self.registry().expect("a registry")["supervisor"]["pid"]
            .as_u64()
            .expect("the supervisor's pid") as u32
    }

    /// The base URL of instance `id`.
    pub fn url_of(&self, id: &str) -> String {
        format!(
            "http://{}",
            self.instance(id).expect("instance is registered")["address"]
                .as_str()
                .expect("address")
        )
    }

    pub fn wait_for_state(&self, id: &str, state: &str) -> Value {
        self.wait_until(&format!("{id} to be {state}"), |p| {
            p.instance(id).filter(|i| i["state"] == state)
        })
    }

    pub fn wait_until<T>(&self, what: &str, mut check: impl FnMut(&Self) -> Option<T>) -> T {
        wait_until(Duration::from_secs(20), what, || check(self))
    }

    /// Every process started for this project: its supervisor and its services, found by their
    /// command line and environment, so that none escapes even if the registry is gone.
    pub fn processes(&self) -> Vec<u32> {
        let registry = format!("MSCTL_REGISTRY={}", self.registry_path().display());
        let manifest = self.path().join("msctl.toml").display().to_string();
        msctl::supervisor::process::scan()
            .filter(|p| p.pid != std::process::id())
            .filter(|p| {
                let cmdline = p.cmdline();
                p.environ().contains(&registry)
                    || (cmdline.contains(&manifest) && cmdline.iter().any(|a| a == "supervise"))
            })
            .map(|p| p.pid)
            .collect()
    }

    /// An instance's log as the service wrote it: each line without the time msctl stamped
    /// it with (empty when there is no log).
    pub fn log_text(&self, instance: &str) -> String {
        let path = self.path().join(format!(".msctl/logs/{instance}.log"));
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| format!("{}\n", msctl::supervisor::logs::without_stamp(l)))
            .collect()
    }

    pub fn write(&self, name: &str, text: &str) {
        let path = self.path().join(name);
        std::fs::create_dir_all(path.parent().expect("a file has a folder")).expect("folder made");
        std::fs::write(path, text).expect("file written");
    }
}

impl Drop for TestProject {
    fn drop(&mut self) {
        let _ = self
            .msctl()
            .arg("down")
            .timeout(Duration::from_secs(20))
            .output();
        for pid in self.processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Child processes a test started itself; killed when the guard goes, even on a failed assert.
#[derive(Default)]
pub struct Children(pub Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Processes a test learnt of by pid (a build's grandchild, not its own child); killed when
/// the guard goes, so that a failed assert about them leaves none behind.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A blocking HTTP client for tests, loopback only.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds")
}

pub fn get_json(url: &str) -> (u16, Value) {
    let r = http()
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// `msctl call ARGS --json` in `p`: the answer as JSON (status, headers, body, trace id).
pub fn call_json(p: &TestProject, args: &[&str]) -> Value {
    let out = p
        .msctl()
        .arg("call")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    stdout_json(&out)
}

/// `msctl trace ID --json` in `p`: the trace's spans, when there are any yet.
pub fn trace_spans(p: &TestProject, id: &str) -> Option<Vec<Value>> {
    let out = p.msctl().args(["trace", id, "--json"]).output().unwrap();
    let spans: Value = serde_json::from_slice(&out.stdout).ok()?;
    spans.as_array().cloned()
}

/// The service of each span, in order.
pub fn services_of(spans: &[Value]) -> Vec<&str> {
    spans
        .iter()
        .filter_map(|s| s["resource"]["service.name"].as_str())
        .collect()
}

pub fn stdout_json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A loopback HTTP receiver that records every request body and answers with the statuses it
/// is given, in order (then 200): a stand-in OTLP endpoint whose bodies a test can check.
pub struct Receiver {
    pub url: String,
    bodies: Received,
}

/// Each request's path and body, in arrival order.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

impl Receiver {
    pub fn start(statuses: Vec<u16>) -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback binds");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let bodies: Received = Default::default();
        let statuses = std::sync::Arc::new(std::sync::Mutex::new(
            std::collections::VecDeque::from(statuses),
        ));
        let (b, s) = (bodies.clone(), statuses.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (b, s) = (b.clone(), s.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut request_line = String::new();
                        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((k, v)) = line.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    length = v.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0u8; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let path = request_line
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or("")
                            .to_string();
                        b.lock().unwrap().push((path, body));
                        let status = s.lock().unwrap().pop_front().unwrap_or(200);
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
                        );
                        if reader.get_mut().write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { url, bodies }
    }

    pub fn bodies(&self) -> Vec<(String, Vec<u8>)> {
        self.bodies.lock().unwrap().clone()
    }
}

/// A venv under the target folder named `name`, with `packages` from PyPI, made once and shared
/// by every test process (a file lock keeps two from installing at once); its python.
/// Fails, saying how to fix it, when python3 or PyPI cannot be had.
pub fn python_venv(name: &str, packages: &[&str]) -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = venv.join("bin/python");
    let ready = venv.join("installed");
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).expect("target tmp folder");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(venv.with_extension("lock"))
        .expect("lock file");
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("the venv lock");
    if !ready.exists() {
        let made = StdCommand::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            made,
            "`python3 -m venv` failed: install Python 3 with venv (Debian: apt-get install python3-venv)"
        );
        let installed = StdCommand::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "installing {packages:?} from PyPI into {} failed; check that PyPI can be reached",
            venv.display()
        );
        std::fs::write(&ready, b"").expect("marker written");
    }
    python
}

/// A Python with the `opentelemetry-proto` package: the strict OTLP schema check.
pub fn otlp_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| python_venv("otlp-venv", &["opentelemetry-proto"]))
        .clone()
}

/// Parses each body as an OTLP `ExportTraceServiceRequest`, strictly (unknown fields and wrong
/// types fail), and returns how many spans they hold.
pub fn otlp_span_count(bodies: &[Vec<u8>]) -> usize {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let path = dir.path().join(format!("{i}.json"));
        std::fs::write(&path, body).expect("body written");
        files.push(path);
    }
    let script = r#"
import sys
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
n = 0
for path in sys.argv[1:]:
    request = json_format.Parse(open(path).read(), ExportTraceServiceRequest())
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            n += len(ss.spans)
print(n)
"#;
    let out = StdCommand::new(otlp_python())
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "the OTLP schema rejected a body: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count")
}

/// A steady stream of GET requests, one after another, to each of `urls` in turn, from a thread
/// of its own, until [`Load::stop`]: what users see while instances die and come back.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// How many answers (or failures) have come back so far.
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    worker: Option<std::thread::JoinHandle<Vec<(String, u16, String)>>>,
}

impl Load {
    pub fn start(urls: Vec<String>) -> Self {
        Self::requests(urls.into_iter().map(|u| (u, None)).collect())
    }

    /// Like [`Load::start`], each request a POST of its JSON body where one is given.
    pub fn requests(requests: Vec<(String, Option<String>)>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = sent.clone();
        let worker = std::thread::spawn(move || {
            let client = http();
            let mut answers = Vec::new();
            for (url, body) in requests.iter().cycle() {
                if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let request = match body {
                    Some(body) => client
                        .post(url)
                        .header("content-type", "application/json")
                        .body(body.clone()),
                    None => client.get(url),
                };
                let answer = match request.send() {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (url.clone(), status, r.text().unwrap_or_default())
                    }
                    Err(e) => (url.clone(), 0, e.to_string()),
                };
                answers.push(answer);
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            answers
        });
        Self {
            stop,
            sent,
            worker: Some(worker),
        }
    }

    /// Waits until `n` more requests have been answered: a stretch of the stream measured in
    /// requests, not time, so that a loaded machine sends as many as an idle one.
    pub fn wait_for_more(&self, n: usize) {
        let sent = || self.sent.load(std::sync::atomic::Ordering::Relaxed);
        let target = sent() + n;
        wait_until(
            Duration::from_secs(60),
            &format!("{n} more requests of the load"),
            || (sent() >= target).then_some(()),
        );
    }

    /// Stops the stream; every answer, in order: URL, status (0: none), body.
    pub fn stop(mut self) -> Vec<(String, u16, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.worker
            .take()
            .expect("running")
            .join()
            .expect("the load thread ends")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A copy of this repository's sample system (contract, kit, users, posts, gateway, in a
/// workspace of their own) for tests that edit its sources. It lives under target/ so that its
/// own build stays warm from one run to the next; a file lock lends it to one test at a time,
/// across test processes. Dropping it stops its system, then releases the lock.
pub struct SampleCopy {
    pub project: TestProject,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// The crates of the sample system, copied as they are.
const SAMPLE_CRATES: [&str; 5] = [
    "contract",
    "services/kit",
    "services/users",
    "services/posts",
    "services/gateway",
];

impl SampleCopy {
    pub fn take() -> Self {
        let target = bin_dir().parent().expect("target/debug has a parent");
        let base = target.join("watch-sample");
        std::fs::create_dir_all(&base).expect("folder made");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(base.join("lock"))
            .expect("lock file");
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .unwrap_or_else(|(_, e)| panic!("cannot lock the sample copy: {e}"));
        let root = base.join("repo");
        let project = TestProject::at(&root);
        if root.join("msctl.toml").exists() {
            // A run that was killed may have left its system up.
            drop(TestProject::at(&root));
        }
        let _ = std::fs::remove_dir_all(root.join(".msctl"));
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for krate in SAMPLE_CRATES {
            sync(&repo.join(krate), &root.join(krate));
        }
        sync(&repo.join("Cargo.lock"), &root.join("Cargo.lock"));
        let mut manifest: toml_edit::DocumentMut = std::fs::read_to_string(repo.join("Cargo.toml"))
            .expect("Cargo.toml")
            .parse()
            .expect("Cargo.toml parses");
        for table in ["package", "dependencies", "dev-dependencies", "lints"] {
            manifest.remove(table);
        }
        manifest["workspace"]["members"] =
            toml_edit::value(toml_edit::Array::from_iter(SAMPLE_CRATES));
        write_if_changed(&root.join("Cargo.toml"), &manifest.to_string());
        write_if_changed(
            &root.join("msctl.toml"),
            &SAMPLE.replace("{bin}", "target/debug").replace(
                "[defaults]\n",
                "[defaults]\nbuild = [\"cargo\", \"build\", \"-p\", \"users\", \"-p\", \"posts\", \"-p\", \"gateway\"]\n",
            ),
        );
        Self {
            project,
            _lock: lock,
        }
    }

    pub fn path(&self) -> &Path {
        self.project.path()
    }

    /// Replaces `from` with `to` in the copy's file `name`, which must hold it.
    pub fn edit(&self, name: &str, from: &str, to: &str) {
        let path = self.path().join(name);
        let text = std::fs::read_to_string(&path).expect("file read");
        assert!(text.contains(from), "{name} does not hold {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("file written");
    }

    /// Puts `name` back as it is in the repository.
    pub fn restore(&self, name: &str) {
        sync(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join(name),
            &self.path().join(name),
        );
    }
}

/// Makes `to` the same as `from` (a file or a folder, `target/` left out), writing only what
/// differs so that cargo sees unchanged files as unchanged.
fn sync(from: &Path, to: &Path) {
    if from.is_file() {
        let text = std::fs::read(from).expect("file read");
        if std::fs::read(to).ok().as_deref() != Some(text.as_slice()) {
            std::fs::create_dir_all(to.parent().expect("a folder")).expect("folder made");
            std::fs::write(to, text).expect("file written");
        }
        return;
    }
    std::fs::create_dir_all(to).expect("folder made");
    let wanted: Vec<_> = std::fs::read_dir(from)
        .expect("folder read")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "target")
        .collect();
    for entry in std::fs::read_dir(to).expect("folder read") {
        let entry = entry.expect("entry");
        if entry.file_name() != "target" && !wanted.contains(&entry.file_name()) {
            let path = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
    for name in wanted {
        sync(&from.join(&name), &to.join(&name));
    }
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).expect("file written");
    }
}

/// Makes sure nats-server is on this machine: installed from Debian's packages when it is
/// missing and this runs as root (as CI does), one test process at a time. Fails saying how to
/// install it otherwise; a bus test never skips.
pub fn nats_server() -> PathBuf {
    let find = || msctl::supervisor::instance::find_program("nats-server", Path::new("/"));
    ensure_debian(&["nats-server"], || find().is_some());
    find().expect("nats-server is installed")
}

/// Opens a service's SQLite database read-only, as a test looks into it.
pub fn service_db(p: &TestProject, service: &str, file: &str) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_with_flags(
        p.path().join(".msctl/data").join(service).join(file),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the database opens");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

/// Installs a Debian package (as root, one test process at a time) unless `present` already
/// holds; fails saying how to install it when it cannot.
fn ensure_debian(packages: &[&str], present: impl Fn() -> bool) {
    if present() {
        return;
    }
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).expect("target tmp folder");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("apt.lock"))
        .expect("lock file");
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("the apt lock");
    if present() {
        return;
    }
    if nix::unistd::geteuid().is_root() {
        let apt = |args: &[&str]| {
            StdCommand::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let install: Vec<&str> = ["install", "-y", "-qq"]
            .iter()
            .chain(packages)
            .copied()
            .collect();
        if !apt(&install) {
            apt(&["update", "-qq"]);
            apt(&install);
        }
    }
    assert!(
        present(),
        "this test needs {} and they could not be installed here: install them (Debian: `sudo apt-get install {}`) and run the tests again",
        packages.join(" and "),
        packages.join(" ")
    );
}

/// A headless Chromium driven through WebDriver (chromedriver on a free loopback port), with
/// blocking calls for tests. Both processes end when it is dropped.
pub struct Browser {
    pub client: fantoccini::Client,
    runtime: tokio::runtime::Runtime,
    driver: Children,
    /// Chromium's temporary files (its profile, its singleton socket): Chromium leaves some of
    /// them behind when it ends, so they go here, removed after the browser.
    scratch: Option<tempfile::TempDir>,
}

impl Browser {
    pub fn start() -> Self {
        let find = |p: &str| msctl::supervisor::instance::find_program(p, Path::new("/"));
        ensure_debian(&["chromium", "chromium-driver"], || {
            find("chromium").is_some() && find("chromedriver").is_some()
        });
        // Port 0: chromedriver binds a free port itself and names it, so that no other process
        // can take a port picked for it before it binds.
        let scratch = tempfile::tempdir().expect("a folder for Chromium's temporary files");
        let mut driver = StdCommand::new(find("chromedriver").expect("chromedriver"))
            // A group of its own, so that the browsers it starts go with it.
            .process_group(0)
            .env("TMPDIR", scratch.path())
            .arg("--port=0")
            .arg("--allowed-ips=127.0.0.1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let stdout = driver.stdout.take().expect("chromedriver's stdout");
        let driver = Children(vec![driver]);
        let (found, port) = std::sync::mpsc::channel();
        // Its output is read to the end, so that it never blocks on, or dies of, a closed pipe.
        std::thread::spawn(move || {
            use std::io::{BufRead, BufReader};
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .strip_prefix("ChromeDriver was started successfully on port ")
                    .and_then(|p| p.trim_end_matches('.').parse::<u16>().ok())
                {
                    let _ = found.send(port);
                }
            }
        });
        let port = port
            .recv_timeout(Duration::from_secs(20))
            .expect("chromedriver names the port it listens on within 20 s");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": find("chromium").expect("chromium").display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                         "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check"],
            }),
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
            scratch: Some(scratch),
        }
    }

    pub fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client.goto(url))
            .expect("the page loads");
    }

    /// Runs `script` in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client.execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script failed: {e}: {script}"))
    }

    /// Waits until `script` returns something other than null, false or an empty list.
    pub fn wait_for(&self, what: &str, script: &str) -> Value {
        wait_until(Duration::from_secs(20), what, || {
            let v = self.eval(script);
            let empty = v.is_null()
                || v == Value::Bool(false)
                || v.as_array().is_some_and(|a| a.is_empty());
            (!empty).then_some(v)
        })
    }

    /// Clicks the element `css` finds. A live page redraws its lists as data arrives, so an
    /// element found just before a redraw is stale by the click: it is found again.
    pub fn click(&self, css: &str) {
        let mut tries = 0;
        loop {
            let clicked = self.runtime.block_on(async {
                self.client
                    .find(fantoccini::Locator::Css(css))
                    .await?
                    .click()
                    .await
            });
            match clicked {
                Ok(_) => return,
                Err(e) if tries < 20 && e.to_string().contains("stale") => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot click {css}: {e}"),
            }
        }
    }

    /// Saves a screenshot as target/dashboard-screenshots/NAME.png: the tests' artifacts.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        self.screenshot_to("dashboard-screenshots", name)
    }

    /// Saves a screenshot as target/FOLDER/NAME.png.
    pub fn screenshot_to(&self, folder: &str, name: &str) -> PathBuf {
        let dir = bin_dir()
            .parent()
            .expect("target/debug has a parent")
            .join(folder);
        std::fs::create_dir_all(&dir).expect("folder made");
        let png = self
            .runtime
            .block_on(self.client.screenshot())
            .expect("a screenshot");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = self.runtime.block_on(client.close());
        for child in &self.driver.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Removed once the browsers are gone, so that none writes into it again.
        for child in &mut self.driver.0 {
            let _ = child.wait();
        }
        drop(self.scratch.take());
    }
}

/// A copy of this repository, without its build output, state or history.
pub fn copy_of_repository(to: &Path) {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = StdCommand::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{root}' --exclude=./target --exclude=./.git --exclude=./.msctl -cf - . | tar -C '{}' -xf -",
            to.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
}
