//! Exit codes: stable, documented in docs/exit-codes.md and the README, relied on by scripts.
//! One rule per situation, whichever command meets it.

pub const OK: u8 = 0;
/// Something unexpected failed (a file that cannot be written, a bug).
pub const FAILURE: u8 = 1;
/// Bad usage: an unknown flag or value, an unknown service name, a malformed URL.
pub const USAGE: u8 = 2;
/// msctl.toml is missing or invalid.
pub const CONFIG: u8 = 3;
/// A build step failed.
pub const BUILD: u8 = 4;
/// A service did not start: it exited, timed out, or its port is taken.
pub const START: u8 = 5;
/// The command needs a running system and none runs (nothing started, or its supervisor died).
pub const NOT_RUNNING: u8 = 6;
/// `up` when the system is already running or being started by another msctl.
pub const ALREADY_RUNNING: u8 = 7;
/// `health`: at least one instance is not healthy.
pub const UNHEALTHY: u8 = 8;
/// `call`: the answer was a 4xx.
pub const HTTP_4XX: u8 = 10;
/// `call`: the answer was a 5xx.
pub const HTTP_5XX: u8 = 11;
/// What the command needs could not be reached: a supervisor that does not answer, the
/// service `call` sends to, an OTLP receiver.
pub const UNREACHABLE: u8 = 12;
/// An OTLP receiver was reached but refused the spans, in whole or in part.
pub const REJECTED: u8 = 13;
/// A signal (Ctrl-C, SIGTERM, SIGHUP) or `msctl down` stopped `up` or `build` before its work
/// was done: a build step in progress, a system still starting. What it had started is stopped.
/// 128 + 2, as a shell reports a command Ctrl-C ended.
pub const INTERRUPTED: u8 = 130;
