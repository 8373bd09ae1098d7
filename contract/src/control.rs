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
    /// Run this many instances of one service: start the missing ones, drain and stop the
    /// highest-numbered extra ones.
    Scale { service: String, replicas: Replicas },
    /// Start (`on`) or stop rebuilding and replacing services when their files change.
    Watch { on: bool },
}

/// How many instances `scale` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replicas {
    /// Exactly this many: `posts=3`.
    To(u32),
    /// This many more, or fewer when negative: `posts=+1`, `posts=-1`.
    By(i32),
}

/// The most instances of one service msctl runs. Each is a process with its own port on one
/// machine; past this a count is a slip (`posts=1000`), and starting it would fork without end.
pub const MAX_REPLICAS: u32 = 64;

/// A count of instances that cannot be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadCount {
    /// Below one.
    TooFew,
    /// Above [`MAX_REPLICAS`]: the count asked for.
    TooMany(i64),
}

impl Replicas {
    /// The count to run, from the count running now: from one to [`MAX_REPLICAS`].
    pub fn resolve(self, now: u32) -> Result<u32, BadCount> {
        let wanted = match self {
            Self::To(n) => i64::from(n),
            Self::By(d) => i64::from(now) + i64::from(d),
        };
        if wanted < 1 {
            Err(BadCount::TooFew)
        } else if wanted > i64::from(MAX_REPLICAS) {
            Err(BadCount::TooMany(wanted))
        } else {
            Ok(wanted as u32)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Pong {
        pid: u32,
        /// Why the supervisor cannot write the registry (a full disk), while it cannot: the
        /// file, and so `ps` and discovery, may be behind what runs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        registry_error: Option<String>,
    },
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
    /// The request cannot be carried out as asked: scaling below one instance, or a service
    /// on a fixed port past one.
    Usage,
    /// It was carried out, but the registry could not be written (a full disk): callers and
    /// `msctl ps` do not see the change yet.
    Unrecorded,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_counts_resolve_against_what_runs() {
        assert_eq!(Replicas::To(3).resolve(1), Ok(3));
        assert_eq!(Replicas::By(1).resolve(3), Ok(4));
        assert_eq!(Replicas::By(-2).resolve(3), Ok(1));
        assert_eq!(Replicas::By(-3).resolve(3), Err(BadCount::TooFew));
        assert_eq!(Replicas::To(0).resolve(2), Err(BadCount::TooFew));
        assert_eq!(Replicas::To(MAX_REPLICAS).resolve(1), Ok(MAX_REPLICAS));
        assert_eq!(
            Replicas::To(100_000).resolve(1),
            Err(BadCount::TooMany(100_000))
        );
        assert_eq!(
            Replicas::By(1).resolve(MAX_REPLICAS),
            Err(BadCount::TooMany(i64::from(MAX_REPLICAS) + 1))
        );
        let scale = Request::Scale {
            service: "posts".into(),
            replicas: Replicas::By(1),
        };
        assert_eq!(
            serde_json::to_string(&scale).unwrap(),
            r#"{"request":"scale","service":"posts","replicas":{"by":1}}"#
        );
    }

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
