//! The control API between the msctl commands and a running supervisor (docs/control-api.md):
//! one typed request per call, one typed answer. It is served on loopback at the registry's
//! `supervisor.control` address, as `POST /v1/control` with the registry's bearer token.

use serde::{Deserialize, Serialize};

/// The path every request is posted to.
pub const PATH: &str = "/v1/control";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Is the supervisor alive and answering?
    Ping,
    /// Stop everything and exit.
    Down,
    /// Start these services (all when empty) and what they depend on. msctl.toml is read again
    /// first, so that services added since start can be started.
    Start { services: Vec<String> },
    /// Stop one service's instances.
    Stop { service: String },
    /// Replace one service's instances, one after another.
    Restart { service: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Pong { pid: u32 },
    Done,
    Failed(Failure),
}

/// Why a request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    /// The instance that failed, for a start that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No such service in msctl.toml.
    UnknownService,
    /// msctl.toml, read again, is not valid.
    Config,
    /// An instance did not start.
    Start,
    /// The system is still starting or already stopping.
    Busy,
    /// The token is missing or wrong, or the request is malformed.
    Refused,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_have_a_stable_wire_form() {
        let start = Request::Start {
            services: vec!["users".into()],
        };
        assert_eq!(
            serde_json::to_string(&start).unwrap(),
            r#"{"request":"start","services":["users"]}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Ping).unwrap(),
            r#"{"request":"ping"}"#
        );
        let failed = Response::Failed(Failure {
            kind: FailureKind::UnknownService,
            message: "no service `nosuch`".into(),
            instance: None,
        });
        let text = serde_json::to_string(&failed).unwrap();
        assert_eq!(
            text,
            r#"{"response":"failed","kind":"unknown_service","message":"no service `nosuch`"}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), failed);
    }
}
