//! What one watch cycle did, as one line for people and one JSON object for tools
//! (`msctl watch --json`; docs/watch.md describes the fields).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Built, and every affected instance replaced by a healthy one.
    Replaced,
    /// The build failed: the running instances keep serving the code built before.
    BuildFailed,
    /// Built, but a new instance did not become healthy: it was stopped, the old one serves.
    StartFailed,
    /// msctl.toml changed and was applied.
    Applied,
    /// msctl.toml changed but is not valid: nothing was changed.
    ConfigInvalid,
}

/// One cycle: from the first save of a burst to the new code serving (or the reason not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cycle {
    pub outcome: Outcome,
    /// The services this cycle rebuilt or replaced (for msctl.toml: those it changed).
    pub services: Vec<String>,
    /// Changed files, relative to the project.
    pub changed: Vec<String>,
    pub debounce_ms: u64,
    #[serde(default)]
    pub build_ms: Option<u64>,
    #[serde(default)]
    pub swap_ms: Option<u64>,
    /// Instances now running the new code.
    #[serde(default)]
    pub replaced: Vec<String>,
    /// Requests answered with an error (5xx, or a failed call) while the swap ran, from the
    /// traces: `None` when msctl could not count them.
    #[serde(default)]
    pub failed_requests: Option<u64>,
    /// For msctl.toml: services started and stopped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub started: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped: Vec<String>,
    /// The compiler's first error, the failed start's reason, or what is wrong in msctl.toml.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last lines a new instance that failed its health check wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
}

impl Cycle {
    /// A cycle that has got no further than its changes.
    pub fn new(
        outcome: Outcome,
        services: Vec<String>,
        changed: Vec<String>,
        debounce_ms: u64,
    ) -> Self {
        Self {
            outcome,
            services,
            changed,
            debounce_ms,
            build_ms: None,
            swap_ms: None,
            replaced: vec![],
            failed_requests: None,
            started: vec![],
            stopped: vec![],
            error: None,
            log_tail: vec![],
        }
    }

    /// `users: changed src/lib.rs → built in 2.1 s → replaced users-1 (0 failed requests)`,
    /// with the error or the new instance's last log lines on the lines after it.
    pub fn line(&self) -> String {
        let who = if self.services.is_empty() {
            "msctl.toml".to_string()
        } else {
            self.services.join(", ")
        };
        let changed = match self.changed.as_slice() {
            [] => String::new(),
            [one] => format!("changed {one}"),
            [first, rest @ ..] => format!("changed {first} and {} more", rest.len()),
        };
        let built = self
            .build_ms
            .map(|ms| format!(" → built in {:.1} s", ms as f64 / 1000.0))
            .unwrap_or_default();
        let failed = match self.failed_requests {
            Some(1) => " (1 failed request)".to_string(),
            Some(n) => format!(" ({n} failed requests)"),
            None => String::new(),
        };
        let mut line = match self.outcome {
            Outcome::Replaced => format!(
                "{who}: {changed}{built} → replaced {}{failed}",
                self.replaced.join(", ")
            ),
            Outcome::BuildFailed => {
                format!("{who}: {changed} → build failed; still serving the last good build")
            }
            Outcome::StartFailed => format!(
                "{who}: {changed}{built} → the new instance did not become healthy; the old one still serves"
            ),
            Outcome::Applied => {
                let mut parts = Vec::new();
                if !self.started.is_empty() {
                    parts.push(format!("started {}", self.started.join(", ")));
                }
                if !self.stopped.is_empty() {
                    parts.push(format!("stopped {}", self.stopped.join(", ")));
                }
                if !self.replaced.is_empty() {
                    parts.push(format!("replaced {}", self.replaced.join(", ")));
                }
                if parts.is_empty() {
                    parts.push("no service changed".into());
                }
                format!("msctl.toml: changed → {}{failed}", parts.join(", "))
            }
            Outcome::ConfigInvalid => {
                "msctl.toml: changed, but it is not valid; nothing was changed".to_string()
            }
        };
        if let Some(error) = &self.error {
            for l in error.lines() {
                line.push_str("\n  ");
                line.push_str(l);
            }
        }
        for l in &self.log_tail {
            line.push_str("\n  | ");
            line.push_str(l);
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycle(outcome: Outcome) -> Cycle {
        Cycle {
            build_ms: Some(2140),
            swap_ms: Some(812),
            replaced: vec!["users-1".into()],
            failed_requests: Some(0),
            ..Cycle::new(
                outcome,
                vec!["users".into()],
                vec!["services/users/src/lib.rs".into()],
                203,
            )
        }
    }

    #[test]
    fn one_line_per_cycle() {
        assert_eq!(
            cycle(Outcome::Replaced).line(),
            "users: changed services/users/src/lib.rs → built in 2.1 s → replaced users-1 (0 failed requests)"
        );
        let mut failed = cycle(Outcome::BuildFailed);
        failed.error =
            Some("services/users/src/lib.rs:42:5: error[E0308]: mismatched types".into());
        assert_eq!(
            failed.line(),
            "users: changed services/users/src/lib.rs → build failed; still serving the last good build\n  services/users/src/lib.rs:42:5: error[E0308]: mismatched types"
        );
        let mut unhealthy = cycle(Outcome::StartFailed);
        unhealthy.log_tail = vec!["panicked at src/main.rs:3".into()];
        assert!(
            unhealthy
                .line()
                .ends_with("old one still serves\n  | panicked at src/main.rs:3")
        );
    }

    #[test]
    fn the_json_form_round_trips() {
        let c = cycle(Outcome::Replaced);
        let text = serde_json::to_string(&c).unwrap();
        assert!(
            text.starts_with(r#"{"outcome":"replaced","services":["users"]"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Cycle>(&text).unwrap(), c);
    }
}
