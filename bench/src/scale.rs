//! Scale: `msctl up` with 3, 10 and 30 scaffolded services (sharing one binary), against a bare
//! shell starting the same processes. Shows that start-up grows no worse than linearly.

use crate::harness::*;
use crate::startup::{System, msctl_once, shell_once};
use std::process::{Command, Stdio};

/// Scaffolds a service into a copy of the repository with the real `msctl scaffold`, builds it
/// in release, and returns its binary.
fn scaffolded_binary(bins: &std::path::Path) -> std::path::PathBuf {
    let copy = tempfile::tempdir().expect("temp dir");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' --exclude=./target --exclude=./.git --exclude=./.msctl -cf - . | tar -C '{}' -xf -",
            root().display(),
            copy.path().display()
        ))
        .status()
        .expect("tar runs");
    assert!(status.success(), "copying the repository failed");
    let ok = Command::new(bins.join("msctl"))
        .args(["scaffold", "benchsvc"])
        .current_dir(copy.path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "msctl scaffold failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    let ok = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "benchsvc"])
        .current_dir(copy.path())
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "building the scaffolded service failed");
    target.join("release/benchsvc")
}

pub fn run(runs: usize) {
    let bins = release_bins();
    let service = scaffolded_binary(&bins);
    println!(
        "scale: time to all healthy with N scaffolded services, median of {runs} runs (release; same poller)\n"
    );
    let mut rows = Vec::new();
    let mut at = Vec::new();
    for n in [3usize, 10, 30] {
        let system = System {
            name: format!("{n} services"),
            services: (1..=n)
                .map(|i| {
                    (
                        format!("svc{i}"),
                        vec![service.display().to_string()],
                        vec![],
                    )
                })
                .collect(),
        };
        let mut m = Vec::new();
        let mut s = Vec::new();
        for _ in 0..runs {
            m.push(msctl_once(&bins, &system).0);
            s.push(shell_once(&system));
        }
        let (m, s) = (median(m), median(s));
        at.push(m);
        rows.push(vec![
            n.to_string(),
            ms(s),
            ms(m),
            format!("{:.2}", m.as_secs_f64() / s.as_secs_f64()),
        ]);
    }
    print_table(
        &["services", "bare shell", "msctl up -d", "msctl/shell"],
        &rows,
    );
    println!(
        "\nmsctl 30 / msctl 3: {:.2}   (target <= 10: no worse than linear)",
        at[2].as_secs_f64() / at[0].as_secs_f64()
    );
    println!("target for 30 services: msctl/shell <= 3.0");
}
