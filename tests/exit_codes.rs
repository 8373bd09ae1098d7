//! The exit-code table of the README (docs/exit-codes.md), row by row: one rule per situation,
//! whichever command meets it. Rows checked elsewhere name their test.

mod common;

use common::TestProject;

fn project() -> TestProject {
    TestProject::new(
        r#"
[services.alpha]
command = ["{bin}/msctl-fixture"]
[services.beta]
command = ["{bin}/msctl-fixture", "--unhealthy"]
start_timeout = "300ms"
"#,
    )
}

/// Leaves only the healthy service in msctl.toml.
fn only_alpha(p: &TestProject) {
    let bin = common::bin_dir().display().to_string();
    p.write(
        "msctl.toml",
        &format!("[services.alpha]\ncommand = [\"{bin}/msctl-fixture\"]\n"),
    );
}

fn code(p: &TestProject, args: &[&str]) -> (i32, String) {
    let out = p.msctl().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn nothing_running_is_6_for_every_command_that_needs_a_running_system() {
    let p = project();
    for args in [
        &["health"][..],
        &["call", "/"],
        &["restart", "alpha"],
        &["stop", "alpha"],
        &["start", "alpha"],
        &["watch"],
        &["watch", "--off"],
        &["watch", "-d"],
        &["dashboard", "--no-open"],
    ] {
        let (c, stderr) = code(&p, args);
        assert_eq!(c, 6, "msctl {args:?}: {stderr}");
        assert!(stderr.contains("nothing is running"), "{stderr}");
    }
    // Commands that read what is there say so and succeed.
    for args in [
        &["ps"][..],
        &["ps", "--json"],
        &["logs"],
        &["traces"],
        &["events"],
        &["events", "--json"],
        &["down"],
    ] {
        assert_eq!(code(&p, args).0, 0, "msctl {args:?}");
    }
    // Contradictory or malformed flags are usage errors, whatever runs.
    for args in [
        &["watch", "--off", "--json"][..],
        &["watch", "-d", "--off"],
        &["events", "-n", "many"],
    ] {
        assert_eq!(code(&p, args).0, 2, "msctl {args:?}");
    }
}

#[test]
fn an_unknown_service_is_2_with_a_suggestion_running_or_not() {
    let p = project();
    let check = |p: &TestProject| {
        for args in [
            &["restart", "alpah"][..],
            &["stop", "alpah"],
            &["start", "alpah"],
            &["logs", "alpah"],
            &["ps", "alpah"],
            &["up", "--no-build", "alpah"],
        ] {
            let (c, stderr) = code(p, args);
            assert_eq!(c, 2, "msctl {args:?}: {stderr}");
            assert!(
                stderr.contains("did you mean `alpha`?"),
                "msctl {args:?}: {stderr}"
            );
        }
    };
    check(&p);
    only_alpha(&p);
    p.up();
    check(&p);
}

#[test]
fn the_remaining_rows() {
    let p = project();
    // 2: bad flags and values.
    assert_eq!(code(&p, &["ps", "--nope"]).0, 2);
    assert_eq!(code(&p, &["traces", "--min-duration", "soon"]).0, 2);
    assert_eq!(code(&p, &["scaffold", "billing", "--port", "0"]).0, 2);
    // 5: beta never turns healthy.
    let (c, stderr) = code(&p, &["up", "-d", "--no-build"]);
    assert_eq!(c, 5, "{stderr}");
    // 7: already running.
    only_alpha(&p);
    p.up();
    let (c, stderr) = code(&p, &["up", "-d", "--no-build"]);
    assert_eq!(c, 7, "{stderr}");
    assert!(stderr.contains("pid"), "{stderr}");
    // 0 when everything is healthy; 8 once one is not.
    assert_eq!(code(&p, &["health"]).0, 0);
    // 12: `open` with no gateway and UI to open.
    let (c, stderr) = code(&p, &["open", "--no-open"]);
    assert_eq!(c, 12, "{stderr}");
    assert!(stderr.contains("no app to open"), "{stderr}");
    // 2: init over the existing msctl.toml.
    assert_eq!(code(&p, &["init"]).0, 2);
    let pid = p.pid_of("alpha-1").unwrap();
    common::signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let (c, _) = code(&p, &["health"]);
    common::signal(pid, nix::sys::signal::Signal::SIGCONT);
    assert_eq!(c, 8);
}

// Rows checked by other tests:
// 3: config_errors.rs (every value, each with file:line:column); init.rs for no msctl.toml.
// 4: up_down.rs a_failed_build_shows_its_output_and_starts_nothing.
// 10, 11, 12 for call: tracing.rs call_exit_codes_and_output_modes.
// 12 and 13 for traces export, 2 for a malformed URL: tracing.rs
//    stored_spans_export_as_valid_otlp_and_retry_only_when_allowed.
// 1 for a panic: hostile.rs a_panic_in_the_supervisor_fails_up_with_its_reason.
// 0 into a closed pipe: hostile.rs every_printing_command_stops_quietly_when_its_reader_goes_away.
