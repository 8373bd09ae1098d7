//! msctl: a command-line orchestrator and dev toolkit for HTTP microservices on one machine.
//!
//! Everything lives in this library so that tests can reach it; `main.rs` only calls [`run`].

#[macro_use]
pub mod output;

pub mod build_step;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod containers;
pub mod dashboard;
pub mod dotenv;
pub mod error;
pub mod init;
pub mod json_view;
pub mod kubernetes;
pub mod limits;
pub mod log_view;
pub mod ports;
pub mod progress;
pub mod project;
pub mod running;
pub mod scaffold;
pub mod supervisor;
pub mod table;
pub mod telemetry;
pub mod traces;
pub mod watch;
pub mod waterfall;
pub mod yaml;

use clap::Parser;
use error::{MsctlError, code};
use std::process::ExitCode;

/// Parses the command line, runs the command, reports any error; the process's exit code.
pub fn run() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                code::USAGE
            } else {
                code::OK
            });
        }
    };
    if cli.no_color || std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        console::set_colors_enabled(false);
        console::set_colors_enabled_stderr(false);
    }
    limits::raise();
    // The project's `.env`, before the runtime starts any thread that could read the
    // environment while it changes. Without a project the command says so itself.
    if let Ok(manifest) = (cmd::Context {
        file: cli.file.clone(),
    })
    .manifest()
    {
        // SAFETY: no other thread runs yet.
        if let Some(problem) = unsafe { dotenv::load(&manifest) } {
            say!("warning: {problem}");
        }
    }
    // One thread: child processes get a parent-death signal tied to the thread that forked
    // them (see supervisor::process), so that thread must live as long as msctl.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the Tokio runtime starts");
    match runtime.block_on(cmd::dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        // The reader of our output has gone (`| head -1`): nothing is left to say, and no one
        // to say it to.
        Err(e) if output::is_broken_pipe(&e) => ExitCode::from(code::OK),
        Err(e) => {
            report(&e);
            ExitCode::from(
                e.downcast_ref::<MsctlError>()
                    .map_or(code::FAILURE, MsctlError::exit_code),
            )
        }
    }
}

/// Prints an error as `error: …`, its details, `caused by: …` lines and a `hint: …`.
pub fn report(e: &anyhow::Error) {
    let red = console::style("error:").red().bold().for_stderr();
    say!("{red} {e}");
    let typed = e.downcast_ref::<MsctlError>();
    if let Some(detail) = typed.and_then(MsctlError::detail) {
        say!("{detail}");
    }
    for cause in e.chain().skip(1) {
        say!("caused by: {cause}");
    }
    if let Some(hint) = typed.and_then(MsctlError::hint) {
        say!("{} {hint}", console::style("hint:").cyan().for_stderr());
    }
}
