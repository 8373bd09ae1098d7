//! The environment msctl gives every instance it starts (docs/environment.md).

/// The service's name, as in msctl.toml.
pub const SERVICE: &str = "MSCTL_SERVICE";
/// The instance's id: `<service>-<n>`.
pub const INSTANCE: &str = "MSCTL_INSTANCE";
/// The port to listen on, on loopback.
pub const PORT: &str = "PORT";
/// The whole address to listen on, `127.0.0.1:PORT`; wins over `PORT`.
pub const ADDR: &str = "MSCTL_ADDR";
/// In a container only: the address to listen on, any interface allowed (`0.0.0.0:8080`).
/// msctl never sets it; `msctl export kubernetes` does.
pub const LISTEN: &str = "MSCTL_LISTEN";
/// The registry file; its presence means msctl runs the service.
pub const REGISTRY: &str = "MSCTL_REGISTRY";
/// The service's own data folder, shared by its instances.
pub const DATA_DIR: &str = "MSCTL_DATA_DIR";
/// `off` records no spans (trace context is still propagated).
pub const TRACE: &str = "MSCTL_TRACE";
/// How many new traces a second each instance starts at most before it samples (default 100);
/// a request whose caller sent a `traceparent` follows the caller's decision.
pub const TRACES_PER_SECOND: &str = "MSCTL_TRACES_PER_SECOND";
/// Timeout of each call to a peer, in milliseconds.
pub const PEER_TIMEOUT_MS: &str = "MSCTL_PEER_TIMEOUT_MS";
/// How long in-flight requests may run after SIGTERM, in milliseconds.
pub const DRAIN_TIMEOUT_MS: &str = "MSCTL_DRAIN_TIMEOUT_MS";
/// OpenTelemetry's standard names, set by msctl so that any SDK reports the right service.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// `Name=value,Name2=value2`, values percent-encoded: the receiver's bearer token goes here.
pub const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// How long an SDK waits before exporting a batch of spans, in milliseconds.
pub const OTEL_BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
/// The same, for log records.
pub const OTEL_BLRP_SCHEDULE_DELAY: &str = "OTEL_BLRP_SCHEDULE_DELAY";
/// `none` turns off the export of log records, as in every OpenTelemetry SDK; spans still go.
pub const OTEL_LOGS_EXPORTER: &str = "OTEL_LOGS_EXPORTER";
/// The standard sampler choice; when it is set, the kit uses it instead of its own.
pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";

/// The variable that gives a peer's address when no registry is used: `users-db` → `USERS_DB_URL`.
pub fn url_variable(service: &str) -> String {
    format!("{}_URL", service.to_ascii_uppercase().replace('-', "_"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_variables_are_upper_snake_case() {
        assert_eq!(super::url_variable("users"), "USERS_URL");
        assert_eq!(super::url_variable("user-db2"), "USER_DB2_URL");
    }
}
