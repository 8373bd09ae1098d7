//! The contract between msctl and the services it runs, in one crate that both depend on: the
//! registry file, the environment, the span and trace-context formats, the control API and the
//! exit codes. Each is documented in `docs/` at the repository's root.

pub mod control;
pub mod env;
pub mod exit;
pub mod fault;
pub mod fs;
pub mod otlp;
pub mod registry;
pub mod sampling;
pub mod span;
pub mod trace_context;

/// The innermost cause of an error: HTTP clients wrap the useful words ("connection refused")
/// in generic ones ("error sending request").
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .last()
        .map(ToString::to_string)
        .unwrap_or_default()
}
