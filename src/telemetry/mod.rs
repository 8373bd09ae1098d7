//! Telemetry: the supervisor's OTLP/HTTP receiver, the SQLite store that `msctl traces` and
//! `msctl trace` read, and OTLP export from that store (docs/telemetry.md).

pub mod convert;
pub mod export;
pub mod receiver;
pub mod store;
