//! msctl under hostile use: output into a closed pipe, two `up -d` at once, signals at awkward
//! moments, a dead supervisor, a panic, and bad values that once slipped through.

mod common;

use common::{TestProject, alive, signal, stdout_json, wait_until};
use nix::sys::signal::Signal;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;

fn two_fixtures() -> TestProject {
    TestProject::new(
        r#"
[services.alpha]
command = ["{bin}/msctl-fixture"]
[services.beta]
command = ["{bin}/msctl-fixture"]
depends_on = ["alpha"]
"#,
    )
}

/// Runs msctl with stdout a pipe whose reader is closed before msctl writes a byte, so every
/// write meets EPIPE; returns the exit code and stderr.
fn into_closed_pipe(p: &TestProject, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    drop(reader);
    let mut cmd: Command = p.msctl_process();
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_printing_command_stops_quietly_when_its_reader_goes_away() {
    let p = two_fixtures();
    p.up();
    p.msctl()
        .args(["call", "--service", "alpha", "/"])
        .output()
        .unwrap();
    let commands: &[&[&str]] = &[
        &["ps"],
        &["ps", "--json"],
        &["logs", "-n", "1000"],
        &["logs", "alpha"],
        &["health"],
        &["health", "--json"],
        &["traces"],
        &["traces", "--json"],
        &["trace", "last"],
        &["trace", "last", "--json"],
        &["top"],
        &["top", "--json"],
        &["events"],
        &["events", "--json"],
        &["call", "--service", "alpha", "/"],
        &["call", "--service", "alpha", "/", "--json"],
        // Passed on as it comes, not held: the pipe is met mid-answer.
        &["call", "--service", "alpha", "stream/2"],
        &["completions", "bash"],
        &["completions", "zsh"],
        &["scaffold", "--list-templates"],
        &["init", "--dry-run"],
        &["--help"],
        &["--version"],
    ];
    for args in commands {
        let (code, stderr) = into_closed_pipe(&p, args);
        assert!(
            !stderr.contains("panicked") && !stderr.to_lowercase().contains("broken pipe"),
            "msctl {args:?} complained about the closed pipe: {stderr}"
        );
        assert_eq!(code, Some(0), "msctl {args:?}: {stderr}");
    }
    // `logs -f` stops too, instead of following into the void.
    let (code, stderr) = into_closed_pipe(&p, &["logs", "-f"]);
    assert_eq!(code, Some(0), "{stderr}");
    // And when the reader goes once it has read what there was (`logs -f | head -c 10`), with no
    // new line to write that would meet the closed pipe, it still stops.
    let mut follower = p
        .msctl_process()
        .args(["logs", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = follower.stdout.take().unwrap();
    let mut read = Vec::new();
    while !(String::from_utf8_lossy(&read).contains("beta-1 listening")
        && String::from_utf8_lossy(&read).contains("alpha-1 listening")
        && read.ends_with(b"\n"))
    {
        let mut chunk = [0u8; 4096];
        let n = std::io::Read::read(&mut out, &mut chunk).unwrap();
        assert!(
            n > 0,
            "logs -f ended early: {}",
            String::from_utf8_lossy(&read)
        );
        read.extend_from_slice(&chunk[..n]);
    }
    drop(out);
    let mut children = common::Children(vec![follower]);
    let follower = &mut children.0[0];
    let status = wait_until(Duration::from_secs(10), "logs -f to stop", || {
        follower.try_wait().ok().flatten()
    });
    assert_eq!(status.code(), Some(0));
}

#[test]
fn two_up_at_once_give_exactly_one_winner_and_restart_nothing() {
    for round in 0..6 {
        let p = two_fixtures();
        let spawn = || {
            p.msctl_process()
                .args(["up", "-d", "--no-build"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let mut codes = [a.status.code(), b.status.code()];
        codes.sort();
        let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(
            codes,
            [Some(0), Some(7)],
            "round {round}: one wins, the other exits 7\n{}\n{}",
            text(&a),
            text(&b)
        );
        let loser = if a.status.code() == Some(7) { &a } else { &b };
        let supervisor = p.supervisor_pid();
        assert!(
            text(loser).contains(&format!("pid {supervisor}")),
            "round {round}: the loser names the winner's pid {supervisor}: {}",
            text(loser)
        );
        for id in ["alpha-1", "beta-1"] {
            let i = p.instance(id).unwrap();
            assert_eq!(i["restarts"], 0, "round {round}: the loser restarted {id}");
            assert_eq!(i["state"], "healthy", "round {round}");
        }
    }
}

#[test]
fn sighup_stops_a_foreground_up_gracefully() {
    let p = TestProject::new(
        r#"
[services.users]
command = ["{bin}/users"]
"#,
    );
    let mut up = p.up_foreground();
    p.wait_for_state("users-1", "healthy");
    let pid = p.pid_of("users-1").unwrap();
    p.wait_until_ready();
    signal(up.id(), Signal::SIGHUP);
    let status = wait_until(Duration::from_secs(20), "msctl up to exit", || {
        up.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
    assert!(!alive(pid));
    // The service was asked to stop, not killed: it drained and said so.
    let log = std::fs::read_to_string(p.path().join(".msctl/logs/users-1.log")).unwrap();
    assert!(log.contains("shutting down"), "{log}");
    assert!(p.registry().is_none(), "the registry is removed");
}

#[test]
fn a_second_interrupt_forces_the_stop_and_still_clears_the_registry() {
    let p = TestProject::new(
        r#"
[services.stubborn]
command = ["{bin}/msctl-fixture", "--ignore-sigterm"]
stop_timeout = "30s"
"#,
    );
    let mut up = p.up_foreground();
    p.wait_for_state("stubborn-1", "healthy");
    let pid = p.pid_of("stubborn-1").unwrap();
    signal(up.id(), Signal::SIGINT);
    p.wait_for_state("stubborn-1", "stopping");
    signal(up.id(), Signal::SIGINT);
    let status = wait_until(Duration::from_secs(10), "msctl up to exit", || {
        up.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(130));
    wait_until(Duration::from_secs(5), "the service to die", || {
        (!alive(pid)).then_some(())
    });
    assert!(
        p.registry().is_none(),
        "no registry is left claiming a healthy instance"
    );
}

#[test]
fn ps_on_a_dead_supervisor_shows_its_instances_gone() {
    let p = two_fixtures();
    p.up();
    let supervisor = p.supervisor_pid();
    signal(supervisor, Signal::SIGKILL);
    wait_until(Duration::from_secs(10), "the instances to die", || {
        ["alpha-1", "beta-1"]
            .iter()
            .all(|i| !alive(p.pid_of(i).unwrap_or(0)))
            .then_some(())
    });
    let out = p.msctl().args(["ps", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for row in rows.as_array().unwrap() {
        assert_eq!(row["state"], "gone", "{row}");
        assert!(row["uptime_ms"].is_null(), "{row}");
    }
    let out = p.msctl().arg("ps").output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!table.contains("healthy"), "{table}");
    // Commands that need a running system say it is not running, with one code.
    for args in [&["health"][..], &["restart", "alpha"], &["call", "/"]] {
        let out = p.msctl().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(6), "msctl {args:?}");
    }
}

#[test]
fn deleting_or_spoiling_the_state_of_a_running_system_loses_nothing() {
    let p = two_fixtures();
    p.up();
    let supervisor = p.supervisor_pid();
    let pids = p.pids_of(&["alpha-1", "beta-1"]);
    // The registry alone: the next command waits the moment it takes to be written again.
    std::fs::remove_file(p.path().join(".msctl/registry.json")).unwrap();
    let out = p.msctl().args(["ps", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    // Overwritten with something that is not a registry: the same.
    std::fs::write(p.path().join(".msctl/registry.json"), "not json {").unwrap();
    let out = p.msctl().args(["ps", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    // The whole folder, as `rm -rf .msctl` or `git clean -fdx` would: the registry and the
    // lock come back, so `down` stops everything and a second `up` does not start a second
    // supervisor beside the first.
    std::fs::remove_dir_all(p.path().join(".msctl")).unwrap();
    wait_until(
        Duration::from_secs(5),
        "the registry to be written again",
        || p.registry().map(|_| ()),
    );
    wait_until(Duration::from_secs(5), "the lock to be taken again", || {
        p.path()
            .join(".msctl/supervisor.lock")
            .exists()
            .then_some(())
    });
    let out = p.msctl().args(["up", "-d", "--no-build"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("already running (supervisor pid {supervisor})")),
        "{stderr}"
    );
    assert_eq!(
        p.supervisor_pid(),
        supervisor,
        "the first supervisor still runs the system"
    );
    // What the instances write from now on is in their logs again.
    p.msctl()
        .args(["call", "say/again", "--service", "alpha"])
        .assert()
        .success();
    wait_until(Duration::from_secs(5), "the new line in the log", || {
        let out = p.msctl().args(["logs", "alpha"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .contains("alpha-1 says again")
            .then_some(())
    });
    // The logs alone, the registry untouched; then one instance's log file: each is written at
    // its path again, where `msctl logs` reads.
    for (gone, word) in [
        (".msctl/logs", "folder"),
        (".msctl/logs/alpha-1.log", "file"),
    ] {
        let gone = p.path().join(gone);
        if gone.is_dir() {
            std::fs::remove_dir_all(&gone).unwrap();
        } else {
            std::fs::remove_file(&gone).unwrap();
        }
        wait_until(
            Duration::from_secs(5),
            "the log written at its path again",
            || {
                p.msctl()
                    .args([
                        "call",
                        &format!("say/after-the-{word}"),
                        "--service",
                        "alpha",
                    ])
                    .assert()
                    .success();
                let out = p.msctl().args(["logs", "alpha"]).output().ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .contains(&format!("alpha-1 says after-the-{word}"))
                    .then_some(())
            },
        );
    }
    p.msctl().arg("down").assert().success();
    for pid in pids.into_iter().chain([supervisor]) {
        wait_until(Duration::from_secs(10), "every process to stop", || {
            (!alive(pid)).then_some(())
        });
    }
}

#[test]
fn changes_to_one_service_asked_at_once_are_made_in_turn_and_all_answered() {
    let p = two_fixtures();
    p.up();
    // Four to start with, so that every order of arrival is valid: the three `-1` first is 1.
    p.msctl().args(["scale", "alpha=4"]).assert().success();
    // Nine scale requests and a restart at once: each read the list of instances while the
    // others changed it, so two `alpha-3` started, or the supervisor panicked on a split past
    // the list's end and took the system down.
    let mut asks: Vec<(String, std::process::Child)> = Vec::new();
    for (n, change) in std::iter::repeat_n("alpha=+1", 6)
        .chain(std::iter::repeat_n("alpha=-1", 3))
        .enumerate()
    {
        let mut cmd = p.msctl_process();
        cmd.args(["scale", change])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        asks.push((format!("{n}: {change}"), cmd.spawn().unwrap()));
        if n == 4 {
            let mut cmd = p.msctl_process();
            cmd.args(["restart", "alpha"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            asks.push(("restart".into(), cmd.spawn().unwrap()));
        }
    }
    for (what, child) in asks {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let registry = p.registry().expect("the supervisor still runs");
    let ids: Vec<&str> = registry["services"]["alpha"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["state"], "healthy", "{i}");
            i["id"].as_str().unwrap()
        })
        .collect();
    let want: Vec<String> = (1..=7).map(|n| format!("alpha-{n}")).collect();
    assert_eq!(ids, want);
    // A stop and a start at once: the start overrides the stop, and the stop is answered once
    // the process it asked about is gone. It used to wait for a stop that never came.
    let asks: Vec<std::process::Child> = [["stop", "beta"], ["start", "beta"]]
        .iter()
        .map(|args| {
            let mut cmd = p.msctl_process();
            cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    // A stop left waiting fails when the client gives up (exit 12).
    for child in asks {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

#[test]
fn a_spoiled_span_store_is_named_and_replaced_without_losing_what_comes_next() {
    let p = two_fixtures();
    p.up();
    let traces = |p: &TestProject| -> Option<Vec<serde_json::Value>> {
        let out = p.msctl().args(["traces", "--json"]).output().ok()?;
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()?
            .as_array()
            .cloned()
    };
    p.msctl().args(["call", "alpha/one"]).assert().success();
    wait_until(Duration::from_secs(10), "the first trace", || {
        traces(&p).filter(|t| t.len() == 1).map(|_| ())
    });
    // Overwritten, with its WAL gone: no longer a database.
    let db = p.path().join(".msctl/telemetry.db");
    std::fs::write(&db, "not a database at all").unwrap();
    for extra in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(p.path().join(format!(".msctl/telemetry.db{extra}")));
    }
    // Said as such, rather than taken for an empty store ("no traces recorded yet").
    let out = p.msctl().arg("traces").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("telemetry.db cannot be read: file is not a database"),
        "{stderr}"
    );
    // The next request's spans go to a new store, the old file kept aside.
    p.msctl().args(["call", "alpha/two"]).assert().success();
    // (The first trace went with the old file: a store that reads holds the second alone.)
    wait_until(
        Duration::from_secs(10),
        "the second trace in a new store",
        || traces(&p).filter(|t| t.len() == 1).map(|_| ()),
    );
    assert!(p.path().join(".msctl/telemetry.db.broken").exists());
}

#[test]
fn a_system_whose_manifest_went_away_can_still_be_seen_and_stopped() {
    let p = two_fixtures();
    p.up();
    let pids = p.pids_of(&["alpha-1", "beta-1"]);
    // As a `git checkout` of a branch without it, or `git stash -u`, would leave it.
    std::fs::rename(p.path().join("msctl.toml"), p.path().join("elsewhere.toml")).unwrap();
    std::fs::create_dir(p.path().join("sub")).unwrap();
    let in_sub = |args: &[&str]| {
        p.msctl()
            .current_dir(p.path().join("sub"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = in_sub(&["ps", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout_json(&out).as_array().unwrap().len(), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("acting on the system that runs there"));
    // What needs msctl.toml itself still asks for it.
    assert_eq!(in_sub(&["restart", "alpha"]).status.code(), Some(3));
    let out = in_sub(&["down"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for pid in pids {
        wait_until(Duration::from_secs(10), "the instances to stop", || {
            (!alive(pid)).then_some(())
        });
    }
    // With nothing running and no manifest, the error is the one it always was.
    assert_eq!(in_sub(&["ps"]).status.code(), Some(3));
}

#[test]
fn a_service_flooding_its_output_does_not_grow_the_supervisor() {
    let p = TestProject::new(
        r#"
[services.flood]
command = ["sh", "-c", "yes a-line-of-output-written-as-fast-as-it-can-be"]
health = "none"
"#,
    );
    p.up();
    // Each line went to the log file and, queued without bound, to the live view that a
    // detached supervisor drops: 1.4 GB of them after five seconds.
    let rotated = p.path().join(".msctl/logs/flood-1.log.1");
    wait_until(Duration::from_secs(60), "16 MiB of output", || {
        rotated.exists().then_some(())
    });
    let supervisor = p.supervisor_pid();
    let status = std::fs::read_to_string(format!("/proc/{supervisor}/status")).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        rss_kib < 100 * 1024,
        "the supervisor holds {rss_kib} KiB after 16 MiB of output"
    );
}

#[test]
fn a_restart_cut_short_by_down_is_told_so() {
    let p = TestProject::new(
        r#"
[services.slow]
command = ["{bin}/msctl-fixture", "--startup-delay", "2000"]
"#,
    );
    p.up();
    let mut cmd = p.msctl_process();
    cmd.args(["restart", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let restart = cmd.spawn().unwrap();
    // The restart's extra instance is starting (two seconds before it listens) when down comes.
    p.wait_until("the extra instance to start", |p| {
        (p.instance("slow-2")?["state"] == "starting").then_some(())
    });
    p.msctl().arg("down").assert().success();
    let out = restart.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("msctl began to stop everything (`msctl down` or a signal) before the restart of slow was done"),
        "{stderr}"
    );
}

#[test]
fn a_panic_in_the_supervisor_fails_up_with_its_reason() {
    let p = two_fixtures();
    let out = p
        .msctl()
        .args(["up", "-d", "--no-build"])
        .env("MSCTL_FAULT", "panic-on-start")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("internal error"), "{stderr}");
    assert!(stderr.contains("injected by MSCTL_FAULT"), "{stderr}");
    assert!(p.registry().is_none());
    assert!(p.processes().is_empty(), "nothing is left running");
}

#[test]
fn start_names_a_taken_fixed_port() {
    let port = portpicker::pick_unused_port().unwrap();
    let p = TestProject::new(&format!(
        r#"
[services.fixed]
command = ["{{bin}}/msctl-fixture"]
port = {port}
"#
    ));
    p.up();
    p.msctl().args(["stop", "fixed"]).assert().success();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = p.msctl().args(["start", "fixed"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains(&format!("port {port} is already taken")),
        "{stderr}"
    );
}

#[test]
fn dash_f_takes_a_folder_and_says_what_is_wrong_with_one() {
    let p = two_fixtures();
    let out = p.msctl().args(["-f", ".", "ps"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let empty = tempfile::tempdir().unwrap();
    let out = p
        .msctl()
        .arg("-f")
        .arg(empty.path())
        .arg("ps")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr.contains("is a folder with no msctl.toml"),
        "{stderr}"
    );
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn call_passes_a_large_answer_on_as_it_comes_and_bounds_each_wait() {
    use std::io::Read;
    let p = TestProject::new("[services.fix]\ncommand = [\"{bin}/msctl-fixture\"]\n");
    p.up();
    // 64 MiB of text: msctl call held all of it (2.3 GB after five seconds of an endless
    // one) and showed nothing until the end. Read a little, then leave the pipe full.
    let mut cmd = p.msctl_process();
    cmd.args(["call", "--service", "fix", "stream/64"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut call = common::Children(vec![cmd.spawn().unwrap()]);
    let pid = call.0[0].id();
    let mut first = [0u8; 1024];
    call.0[0]
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(first[..4], *b"ssss");
    std::thread::sleep(Duration::from_millis(500));
    let held = rss_kib(pid);
    assert!(
        held < 40 * 1024,
        "msctl call holds {held} KiB of a 64 MiB answer"
    );
    let mut rest = Vec::new();
    call.0[0]
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut rest)
        .unwrap();
    assert_eq!(rest.len() + first.len(), 64 * 1024 * 1024);
    assert!(call.0[0].wait().unwrap().success());

    // --json has to hold the body, so it stops past 16 MiB and says what to do.
    let stderr = p.fails_saying(&["call", "--json", "--service", "fix", "stream/20"], 2);
    assert!(
        stderr.contains("larger than 16 MiB, the most --json holds; without --json"),
        "{stderr}"
    );

    // --timeout bounds the wait for the head and for each part, and says which ran out.
    let out = p.fails(
        &["call", "--service", "fix", "stall", "--timeout", "300ms"],
        12,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.stdout, b"partial\n");
    assert!(
        stderr.contains("the answer stopped for 300ms after 8 bytes of its body; --timeout sets"),
        "{stderr}"
    );
    let stderr = p.fails_saying(
        &["call", "--service", "fix", "silent", "--timeout", "300ms"],
        12,
    );
    assert!(stderr.contains("no answer within 300ms"), "{stderr}");
    let stderr = p.fails_saying(&["call", "--service", "fix", "x", "--timeout", "soon"], 2);
    assert!(stderr.contains("`soon` is not a duration"), "{stderr}");

    // A header HTTP cannot carry is bad usage, not a service that cannot be reached.
    for (header, said) in [
        ("X-A: v\r\nInjected: 1", "its value holds a line break"),
        ("a b: v", "`a b` is not a header name"),
    ] {
        let stderr = p.fails_saying(&["call", "--service", "fix", "x", "-H", header], 2);
        assert!(stderr.contains(said), "{stderr}");
    }
}

#[test]
fn many_instances_start_under_a_low_open_file_limit_and_services_keep_that_limit() {
    use std::os::unix::process::CommandExt;
    let p = TestProject::new(
        "[services.a]\ncommand = [\"sh\", \"-c\", \"echo limit $(ulimit -n); exec {bin}/msctl-fixture\"]\n",
    );
    // 24 instances take some 100 descriptors in the supervisor: past a soft limit of 64, as 256
    // instances are past the 1,024 most logins start with. The hard limit stays as it is.
    let mut cmd = p.msctl_process();
    cmd.args(["up", "-d", "--scale", "a=24"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::resource::{Resource, getrlimit, setrlimit};
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
            setrlimit(Resource::RLIMIT_NOFILE, 64, hard)?;
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let healthy = p
        .json(&["ps", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "healthy")
        .count();
    assert_eq!(healthy, 24);
    let log = p.log_text("a-24");
    assert!(log.starts_with("limit 64\n"), "{log}");
}

#[test]
fn a_signal_during_the_build_stops_the_whole_build_and_starts_nothing() {
    // The build leaves a grandchild, as cargo leaves rustc: a signal to msctl alone (`kill`, a
    // process manager) left both running, orphaned, holding cargo's lock for the next build.
    let p = TestProject::new(
        r#"
[services.a]
command = ["{bin}/msctl-fixture"]
build = ["sh", "-c", "sleep 60 & echo $! > grandchild.pid; wait"]
"#,
    );
    let mut cmd = p.msctl_process();
    cmd.arg("up").stdout(Stdio::null()).stderr(Stdio::piped());
    // Killed if the test fails before it is waited for.
    let mut up = common::Children(vec![cmd.spawn().unwrap()]);
    let up_pid = up.0[0].id();
    let pid_file = p.path().join("grandchild.pid");
    let grandchild: u32 = wait_until(Duration::from_secs(20), "the build to start", || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    let _grandchild = common::KillOnDrop(grandchild);
    signal(up_pid, Signal::SIGTERM);
    let out = up.0.pop().unwrap().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("msctl got SIGTERM while `sh -c sleep 60 & echo $! > grandchild.pid; wait` ran; the build was stopped, nothing was started"),
        "{stderr}"
    );
    wait_until(
        Duration::from_secs(5),
        "the build's grandchild to end",
        || (!alive(grandchild)).then_some(()),
    );
    assert!(p.registry().is_none());
    assert!(p.processes().is_empty());
}

#[test]
fn down_during_a_watch_rebuild_stops_the_whole_build() {
    // Watch mode's rebuild was killed by its leader's pid alone when the supervisor stopped: the
    // build's children (cargo's rustc, here a shell's `sleep`) ran on, orphaned.
    let p = TestProject::new(
        r#"
[services.a]
command = ["{bin}/msctl-fixture"]
build = ["sh", "-c", "if [ -e slow ]; then sleep 60 & echo $! > grandchild.pid; wait; fi"]
watch = ["src"]
"#,
    );
    std::fs::create_dir(p.path().join("src")).unwrap();
    p.msctl().args(["up", "-d", "--watch"]).assert().success();
    p.write("slow", "");
    p.write("src/main.txt", "changed");
    let pid_file = p.path().join("grandchild.pid");
    let grandchild: u32 = wait_until(Duration::from_secs(20), "the rebuild to start", || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    let _grandchild = common::KillOnDrop(grandchild);
    p.msctl().arg("down").assert().success();
    wait_until(
        Duration::from_secs(5),
        "the rebuild's grandchild to end",
        || (!alive(grandchild)).then_some(()),
    );
}

/// A service that starts two processes outside its process group, as a service that runs a
/// helper with `setsid`, or a daemon that double-forks, does; their pids are appended to
/// escaped.pids, one line per start.
const ESCAPES: &str = r#"
setsid sleep 1001 &
echo $! >> escaped.pids
( setsid sh -c 'echo $$ >> escaped.pids; exec sleep 1003' & )
exec "$@"
"#;

fn escaped(p: &TestProject, starts: usize) -> Vec<u32> {
    p.wait_until("the service's helpers to start", |p| {
        let text = std::fs::read_to_string(p.path().join("escaped.pids")).ok()?;
        let pids: Vec<u32> = text.lines().filter_map(|l| l.parse().ok()).collect();
        (pids.len() >= 2 * starts).then_some(pids)
    })
}

#[test]
fn down_stops_what_a_service_started_outside_its_process_group() {
    let p = TestProject::new(
        r#"
[services.a]
command = ["sh", "escape.sh", "{bin}/msctl-fixture"]
"#,
    );
    p.write("escape.sh", ESCAPES);
    p.up();
    let pids = escaped(&p, 1);
    let _guards: Vec<_> = pids.iter().map(|&pid| common::KillOnDrop(pid)).collect();
    assert!(pids.iter().all(|&pid| alive(pid)), "{pids:?}");
    p.msctl().arg("down").assert().success();
    wait_until(Duration::from_secs(5), "the helpers to end", || {
        pids.iter().all(|&pid| !alive(pid)).then_some(())
    });
}

#[test]
fn a_crashed_service_leaves_nothing_running_when_it_restarts() {
    // Docker kills what is left in a container whose main process ended; msctl left the helpers
    // running, and each restart added two more.
    let p = TestProject::new(
        r#"
[services.a]
command = ["sh", "escape.sh", "{bin}/msctl-fixture", "--crash-once", "crashed", "--crash-after", "300"]
"#,
    );
    p.write("escape.sh", ESCAPES);
    p.up();
    let pids = escaped(&p, 2);
    let _guards: Vec<_> = pids.iter().map(|&pid| common::KillOnDrop(pid)).collect();
    p.wait_for_state("a-1", "healthy");
    let (first, second) = pids.split_at(2);
    wait_until(
        Duration::from_secs(5),
        "the first start's helpers to end",
        || first.iter().all(|&pid| !alive(pid)).then_some(()),
    );
    assert!(second.iter().all(|&pid| alive(pid)), "{pids:?}");
    let log = std::fs::read_to_string(p.path().join(".msctl/logs/a-1.log")).unwrap();
    assert!(
        log.contains("killed 2 process(es) it left running outside its process group"),
        "{log}"
    );
}

#[test]
fn a_signal_before_a_detached_system_is_ready_stops_what_was_started() {
    let p = TestProject::new(
        r#"
[services.a]
command = ["{bin}/msctl-fixture"]
[services.b]
command = ["{bin}/msctl-fixture", "--startup-delay", "30000"]
depends_on = ["a"]
"#,
    );
    let mut cmd = p.msctl_process();
    cmd.args(["up", "-d"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut up = common::Children(vec![cmd.spawn().unwrap()]);
    // Before: the supervisor went on starting the system, with nobody left to say so.
    p.wait_until("b-1 to be starting", |p| {
        (p.instance("b-1")?["state"] == "starting").then_some(())
    });
    let started = p.pids_of(&["a-1", "b-1"]);
    signal(up.0[0].id(), Signal::SIGINT);
    let out = up.0.pop().unwrap().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(
            "msctl got SIGINT before the system was ready; everything it had started is stopped"
        ),
        "{stderr}"
    );
    for pid in started {
        assert!(!alive(pid), "instance pid {pid} still runs");
    }
    assert!(p.processes().is_empty(), "{:?}", p.processes());
    assert!(p.registry().is_none());

    // `msctl down` meanwhile: it stops the system, and `up -d` says who did, rather than
    // "the supervisor exited with code 0 before the system was ready".
    let mut cmd = p.msctl_process();
    cmd.args(["up", "-d"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut up = common::Children(vec![cmd.spawn().unwrap()]);
    p.wait_until("b-1 to be starting", |p| {
        (p.instance("b-1")?["state"] == "starting").then_some(())
    });
    p.msctl().arg("down").assert().success();
    let out = up.0.pop().unwrap().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(
            "`msctl down` came before the system was ready; everything it had started is stopped"
        ),
        "{stderr}"
    );
    assert!(p.processes().is_empty(), "{:?}", p.processes());
}

#[test]
fn a_file_in_place_of_the_state_folder_is_named_with_what_to_do() {
    let p = TestProject::new("[services.a]\ncommand = [\"{bin}/msctl-fixture\"]\n");
    std::fs::write(p.path().join(".msctl"), "not a folder").unwrap();
    for args in [&["up", "-d"][..], &["ps"], &["down"]] {
        let stderr = p.fails_saying(args, 1);
        assert!(
            stderr.contains(".msctl is a file, where msctl keeps the running system's state (a folder); move it away or delete it"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(p.path().join(".msctl")).unwrap(),
        "not a folder"
    );
}

#[test]
fn a_registry_that_cannot_be_written_is_said_by_every_command_until_it_can() {
    let p = TestProject::new("[services.a]\ncommand = [\"{bin}/msctl-fixture\"]\n");
    p.up();
    // Standing in for a full disk, which this test cannot make: the file the registry is
    // written to before it replaces the old one cannot be created.
    let blocker = p
        .path()
        .join(format!(".msctl/.registry.json.{}.tmp", p.supervisor_pid()));
    std::fs::create_dir(&blocker).unwrap();
    // Before: "a scaled to 2", while callers and `ps` never learnt of a-2.
    let stderr = p.fails_saying(&["scale", "a=2"], 1);
    assert!(
        stderr.contains("done, but the supervisor cannot write the registry"),
        "{stderr}"
    );
    let out = p.msctl().arg("ps").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: the supervisor cannot write the registry"),
        "{stderr}"
    );
    // Once it can, it is written, and the warning goes.
    std::fs::remove_dir(&blocker).unwrap();
    p.wait_until("a-2 in the registry", |p| p.instance("a-2"));
    let out = p.msctl().arg("ps").output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{out:?}"
    );
}
