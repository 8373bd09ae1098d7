//! Start-up progress for `up`: on a terminal a spinner per instance that turns into a tick with
//! its address and start-up time; elsewhere plain lines with no control characters.

use crate::log_view::Prefixes;
use crate::supervisor::events::Event;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug)]
pub struct Progress {
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    /// Foreground `up` shows the services' log lines too.
    show_logs: bool,
    prefixes: Prefixes,
}

pub fn stderr_is_terminal() -> bool {
    console::Term::stderr().is_term()
}

impl Progress {
    pub fn new(instances: Vec<String>, show_logs: bool) -> Self {
        let multi = stderr_is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self {
            multi,
            bars: HashMap::new(),
            show_logs,
            prefixes: Prefixes::new(instances, true),
        }
    }

    fn say(&self, line: String) {
        match &self.multi {
            Some(m) if self.bars.values().any(|b| !b.is_finished()) => {
                let _ = m.println(line);
            }
            _ => say!("{line}"),
        }
    }

    /// The outcome of an instance's start: on its spinner's line, marked, or as a line.
    fn settle(&self, instance: &str, mark: &impl std::fmt::Display, msg: String) {
        match self.bars.get(instance) {
            Some(bar) if !bar.is_finished() => {
                bar.set_style(ProgressStyle::with_template("{msg}").expect("template is valid"));
                bar.finish_with_message(format!("{mark} {msg}"));
            }
            _ => self.say(msg),
        }
    }

    pub fn handle(&mut self, event: &Event) {
        let ok = console::style("✔").green().for_stderr();
        let bad = console::style("✘").red().for_stderr();
        match event {
            Event::Starting { instance } => match &self.multi {
                Some(m) => {
                    // Styled before it is added, so it never draws as a bare spinner.
                    let spinner = || {
                        ProgressBar::new_spinner()
                            .with_style(
                                ProgressStyle::with_template("{spinner:.cyan} {msg}")
                                    .expect("template is valid"),
                            )
                            .with_message(format!("{instance} starting"))
                    };
                    let bar = self
                        .bars
                        .entry(instance.clone())
                        .or_insert_with(|| m.add(spinner()));
                    if bar.is_finished() {
                        // A restart: the same line spins again.
                        bar.reset();
                        bar.set_style(spinner().style());
                        bar.set_message(format!("{instance} starting"));
                    }
                    bar.enable_steady_tick(Duration::from_millis(80));
                }
                None => say!("{instance} starting"),
            },
            Event::Healthy {
                instance,
                address,
                startup_ms,
            } => self.settle(
                instance,
                &ok,
                format!("{instance} healthy at {address} in {startup_ms:.1} ms"),
            ),
            Event::Completed { instance, took_ms } => self.settle(
                instance,
                &ok,
                format!("{instance} completed in {took_ms:.1} ms"),
            ),
            Event::Failed {
                instance, reason, ..
            } => self.settle(instance, &bad, format!("{instance} failed: {reason}")),
            Event::Exited { instance, reason } => self.say(format!("{instance} {reason}")),
            Event::Unhealthy { instance, reason } => {
                self.say(format!("{instance} unhealthy: {reason}"))
            }
            Event::Restarting {
                instance,
                after_ms,
                restarts,
            } => self.say(format!(
                "{instance} restarting in {after_ms} ms (restart {restarts})"
            )),
            Event::GaveUp { instance, reason } => {
                self.say(format!("{instance} left down: {reason}"))
            }
            Event::Stopping { .. } | Event::Stopped { .. } => {}
            Event::Log { instance, line } => {
                if self.show_logs {
                    let line = self.prefixes.line(instance, line);
                    self.say(line);
                }
            }
            Event::Absent { service, reason } => {
                let warn = console::style("warning:").yellow().bold().for_stderr();
                self.say(format!("{warn} {service} is absent: {reason}"));
            }
            Event::Watch { cycle } => {
                let mark = match cycle.outcome {
                    crate::watch::report::Outcome::Replaced
                    | crate::watch::report::Outcome::Applied => ok,
                    _ => bad,
                };
                self.say(format!("{mark} {}", cycle.line()));
            }
            Event::Ready { .. } | Event::Aborted { .. } => self.finish(),
        }
    }

    /// Clears any spinner still turning, so later output starts on a clean line.
    pub fn finish(&mut self) {
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
        }
    }
}
