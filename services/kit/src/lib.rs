//! The service kit: everything that makes a binary a well-behaved msctl service, in one call.
//!
//! A service builds its `Router`, then hands it to [`Kit::serve`], which binds loopback, answers
//! `GET /health`, turns every error into the JSON error shape, propagates `traceparent`, logs
//! structured lines, exports spans and logs over OTLP, and shuts down gracefully on SIGTERM or SIGINT.

pub use msctl_contract::{self as contract, registry};
/// The OpenTelemetry API the kit's spans are made with, for services' and tests' own use.
pub use opentelemetry;

pub mod balance;
pub mod bus;
pub mod client;
pub mod deadline;
pub mod discovery;
pub mod env;
pub mod error;
pub mod fault;
pub mod h1;
pub mod log;
pub mod params;
pub mod pool;
pub mod proxy;
pub mod read_cache;
pub mod sampling;
pub mod server;
pub mod telemetry;
pub mod testing;
pub mod trace_context;

pub use client::{PeerError, PeerRequest, PeerResponse, PeerStream, Peers, Relayed, RelayedAnswer};
pub use discovery::{Discovery, DiscoveryError, Endpoint};
pub use env::ServiceEnv;
pub use error::ApiError;
pub use server::Kit;
pub use telemetry::Telemetry;
pub use trace_context::{RequestContext, TraceParent};

/// The instrumentation scope of the kit's spans and log records.
pub const SCOPE: &str = msctl_contract::otlp::SCOPE;

/// A span for one SQLite statement, a child of the request it runs in:
/// `let _q = msctl_kit::db_span("SELECT", "users").entered();`
pub fn db_span(operation: &str, table: &str) -> tracing::Span {
    // In a trace that is not sampled nothing would record it, so none is made: `tracing`'s
    // registry would still build and track one that every layer then ignores.
    if sampling::in_unsampled_trace() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "db",
        otel.name = format!("{operation} {table}"),
        db.system.name = "sqlite",
        db.operation.name = operation,
        db.collection.name = table,
    )
}
