//! Start-up: from launching the runner to every service answering its health check, for msctl
//! (`up -d --no-build`), honcho and a bare shell, on the same binaries and ports, timed by the
//! same external poller. Also msctl's supervisor peak memory.

use crate::harness::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct System {
    pub name: String,
    /// (service name, argv, depends_on)
    pub services: Vec<(String, Vec<String>, Vec<String>)>,
}

fn sample(bins: &Path) -> System {
    let bin = |n: &str| vec![bins.join(n).display().to_string()];
    System {
        name: "sample (3 services)".into(),
        services: vec![
            ("users".into(), bin("users"), vec![]),
            ("posts".into(), bin("posts"), vec![]),
            (
                "gateway".into(),
                bin("gateway"),
                vec!["users".into(), "posts".into()],
            ),
        ],
    }
}

fn trivial(bins: &Path, n: usize) -> System {
    System {
        name: "20 trivial services".into(),
        services: (1..=n)
            .map(|i| {
                (
                    format!("svc{i}"),
                    vec![bins.join("msctl-fixture").display().to_string()],
                    vec![],
                )
            })
            .collect(),
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// The environment each instance gets in every runner, so they run identically.
fn env_for(dir: &Path, name: &str, port: u16, ports: &[(String, u16)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("PORT".to_string(), port.to_string()),
        (
            "MSCTL_DATA_DIR".to_string(),
            dir.join("data").join(name).display().to_string(),
        ),
        ("MSCTL_TRACE".to_string(), "off".to_string()),
    ];
    for (peer, p) in ports {
        env.push((
            format!("{}_URL", peer.to_uppercase()),
            format!("http://127.0.0.1:{p}"),
        ));
    }
    env
}

pub fn msctl_once(bins: &Path, system: &System) -> (Duration, Option<u64>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = ports(system.services.len());
    let mut toml = String::new();
    for ((name, argv, deps), port) in system.services.iter().zip(&ports) {
        toml.push_str(&format!("[services.{name}]\ncommand = {argv:?}\nport = {port}\ndepends_on = {deps:?}\nenv = {{ MSCTL_TRACE = \"off\" }}\n\n"));
    }
    std::fs::write(dir.path().join("msctl.toml"), toml).expect("manifest written");
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let marked = Marked::new();
    let start = Instant::now();
    let mut up = spawn_group(
        marked
            .mark(&mut Command::new(bins.join("msctl")))
            .args(["up", "-d", "--no-build"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let took = poll_all(&addrs, start, TIMEOUT).expect("msctl brought everything up");
    let _ = up.wait();
    let registry: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(".msctl/registry.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    // Let a few health-check rounds run before reading the peak.
    std::thread::sleep(Duration::from_millis(1500));
    let peak = registry["supervisor"]["pid"]
        .as_u64()
        .and_then(|pid| peak_rss_kib(pid as u32));
    let _ = Command::new(bins.join("msctl"))
        .arg("down")
        .current_dir(dir.path())
        .stderr(Stdio::null())
        .status();
    (took, peak)
}

/// Each service's shell command line, on a free port with the same environment as under msctl,
/// and the addresses to poll.
fn commands(dir: &Path, system: &System) -> (Vec<(String, String)>, Vec<SocketAddr>) {
    let ports = ports(system.services.len());
    let named: Vec<(String, u16)> = system
        .services
        .iter()
        .map(|s| s.0.clone())
        .zip(ports.iter().copied())
        .collect();
    let commands = system
        .services
        .iter()
        .zip(&ports)
        .map(|((name, argv, _), port)| {
            let env: Vec<String> = env_for(dir, name, *port, &named)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            (
                name.clone(),
                format!("env {} {}", env.join(" "), argv.join(" ")),
            )
        })
        .collect();
    let addrs = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    (commands, addrs)
}

fn honcho_once(honcho: &Path, system: &System) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let (commands, addrs) = commands(dir.path(), system);
    let procfile: String = commands
        .iter()
        .map(|(name, cmd)| format!("{name}: {cmd}\n"))
        .collect();
    std::fs::write(dir.path().join("Procfile"), procfile).expect("Procfile written");
    let log = std::fs::File::create(dir.path().join("honcho.log")).expect("log file");
    let marked = Marked::new();
    let start = Instant::now();
    let mut child = spawn_group(
        marked
            .mark(&mut Command::new(honcho))
            .arg("start")
            .current_dir(dir.path())
            .stdout(log)
            .stderr(Stdio::null()),
    );
    let took = poll_all(&addrs, start, TIMEOUT).unwrap_or_else(|| {
        stop_group(&mut child);
        panic!(
            "honcho did not bring everything up:\n{}",
            std::fs::read_to_string(dir.path().join("honcho.log")).unwrap_or_default()
        )
    });
    stop_group(&mut child);
    took
}

pub fn shell_once(system: &System) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let (commands, addrs) = commands(dir.path(), system);
    let mut script: String = commands
        .iter()
        .map(|(_, cmd)| format!("{cmd} >/dev/null 2>&1 &\n"))
        .collect();
    script.push_str("wait\n");
    let marked = Marked::new();
    let start = Instant::now();
    let mut child = spawn_group(
        marked
            .mark(&mut Command::new("sh"))
            .arg("-c")
            .arg(script)
            .current_dir(dir.path()),
    );
    let took = poll_all(&addrs, start, TIMEOUT).expect("the shell brought everything up");
    stop_group(&mut child);
    took
}

pub fn run(runs: usize) {
    let bins = release_bins();
    let honcho = python_tool("honcho==2.0.0", "honcho");
    println!(
        "start-up to all healthy, median of {runs} runs (release binaries; same poller for all)\n"
    );
    let mut rows = Vec::new();
    let mut peaks = Vec::new();
    for system in [sample(&bins), trivial(&bins, 20)] {
        let mut m = Vec::new();
        let mut h = Vec::new();
        let mut s = Vec::new();
        for _ in 0..runs {
            let (took, peak) = msctl_once(&bins, &system);
            m.push(took);
            peaks.extend(peak);
            h.push(honcho_once(&honcho, &system));
            s.push(shell_once(&system));
        }
        let (m, h, s) = (median(m), median(h), median(s));
        rows.push(vec![
            system.name.clone(),
            ms(s),
            ms(h),
            ms(m),
            format!("{:.2}", m.as_secs_f64() / h.as_secs_f64()),
            format!("{:.2}", m.as_secs_f64() / s.as_secs_f64()),
        ]);
    }
    print_table(
        &[
            "system",
            "bare shell",
            "honcho",
            "msctl up -d",
            "msctl/honcho",
            "msctl/shell",
        ],
        &rows,
    );
    println!("\ntargets: msctl/honcho <= 0.50, msctl/shell <= 3.0");
    if let Some(max) = peaks.iter().max() {
        println!(
            "msctl supervisor peak memory (VmHWM): {:.1} MiB",
            *max as f64 / 1024.0
        );
    }
}
