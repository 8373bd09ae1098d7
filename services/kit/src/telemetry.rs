//! The kit's telemetry, built on the ecosystem: `tracing` for spans and events, bridged by
//! `tracing-opentelemetry` to the OpenTelemetry SDK, exported over OTLP/HTTP protobuf by
//! `opentelemetry-otlp` wherever the standard `OTEL_EXPORTER_OTLP_*` variables point (msctl sets
//! them for every instance). Events are also JSON lines on stdout, filtered by `RUST_LOG`.

use crate::log::JsonLines;
use crate::log::LinesGuard;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, dynamic_filter_fn, filter_fn};
use tracing_subscriber::layer::{Layer, SubscriberExt};

/// What a service's telemetry is: where it goes, and the handles to flush it at exit.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    providers: Option<Arc<Providers>>,
    /// Writes out the queued stdout lines when the last handle goes.
    _lines: Option<Arc<LinesGuard>>,
}

#[derive(Debug)]
struct Providers {
    traces: SdkTracerProvider,
    logs: Option<SdkLoggerProvider>,
}

/// How the kit traces, from `MSCTL_TRACE` and the OpenTelemetry variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `MSCTL_TRACE=off`: no spans at all; a caller's trace context is passed on unchanged.
    Off,
    /// Spans with ids, so that traces propagate and log lines carry ids, but nowhere to send
    /// them: a service run by hand with no OTLP endpoint.
    Local,
    /// Spans exported over OTLP.
    Export,
}

impl Mode {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        use msctl_contract::env as var;
        let set = |k: &str| lookup(k).is_some_and(|v| !v.is_empty());
        if lookup(var::TRACE).as_deref() == Some("off") {
            Self::Off
        } else if set(var::OTEL_EXPORTER_OTLP_ENDPOINT)
            || set(var::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
        {
            Self::Export
        } else {
            Self::Local
        }
    }
}

impl Telemetry {
    /// Installs the process's `tracing` subscriber: JSON lines on stdout and, unless `mode` is
    /// `Off`, OpenTelemetry spans, exported where the environment says. Logs are exported as
    /// OTLP log records when a logs endpoint is set, unless `OTEL_LOGS_EXPORTER=none`. Call
    /// once, inside a Tokio runtime.
    pub fn install(service: &str, instance: &str, mode: Mode) -> Self {
        let logs_endpoint = {
            use msctl_contract::env as var;
            let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
            let off = std::env::var(var::OTEL_LOGS_EXPORTER).is_ok_and(|v| v.trim() == "none");
            !off && (set(var::OTEL_EXPORTER_OTLP_ENDPOINT)
                || set(var::OTEL_EXPORTER_OTLP_LOGS_ENDPOINT))
        };
        let resource = Resource::builder()
            .with_service_name(service.to_string())
            .with_attribute(KeyValue::new("service.instance.id", instance.to_string()))
            .build();
        let (stdout, lines) = JsonLines::stdout(service, instance);
        // Log lines are made of events only; the spans they sit in matter to the span layer
        // alone, so that a span nobody records (tracing off, or a trace not sampled) is never
        // made at all.
        let stdout = stdout.with_filter(filter_fn(|meta| meta.is_event()).and(rust_log()));
        let logs = (mode != Mode::Off && logs_endpoint)
            .then(|| opentelemetry_otlp::LogExporter::builder().with_http().build())
            .and_then(|built| match built {
                Ok(exporter) => Some(
                    SdkLoggerProvider::builder()
                        .with_resource(resource.clone())
                        .with_batch_exporter(exporter)
                        .build(),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "OTLP log export is off: the exporter did not build");
                    None
                }
            });
        // The SDK's own diagnostics go to stdout only: exporting them could feed a loop.
        // A request's log records go with its trace: one not sampled keeps them on stdout.
        let bridge = logs.as_ref().map(|provider| {
            OpenTelemetryTracingBridge::new(provider).with_filter(
                filter_fn(|meta| meta.is_event())
                    // Asked at every event, first: the answer depends on the request.
                    .and(dynamic_filter_fn(|_, _| {
                        !crate::sampling::in_unsampled_trace()
                    }))
                    .and(rust_log().add_directive("opentelemetry=off".parse().expect("valid"))),
            )
        });
        let sampler = sampler();
        let traces = match mode {
            Mode::Off => None,
            Mode::Local => Some(
                sampled(SdkTracerProvider::builder(), sampler)
                    .with_resource(resource)
                    .build(),
            ),
            Mode::Export => match opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
            {
                Ok(exporter) => Some(
                    sampled(SdkTracerProvider::builder(), sampler)
                        .with_resource(resource)
                        .with_batch_exporter(exporter)
                        .build(),
                ),
                Err(e) => {
                    eprintln!("warning: OTLP span export is off: {e}");
                    Some(sampled(SdkTracerProvider::builder(), sampler).build())
                }
            },
        };
        let spans = traces.as_ref().map(span_layer);
        let subscriber = tracing_subscriber::registry()
            .with(stdout)
            .with(bridge)
            .with(spans);
        let _ = tracing::subscriber::set_global_default(subscriber);
        Self {
            providers: traces.map(|traces| Arc::new(Providers { traces, logs })),
            _lines: Some(Arc::new(lines)),
        }
    }

    /// Sends every span and log record made so far, waiting at most `limit`: a service calls
    /// it as it exits, so that its last requests are not lost.
    pub async fn flush(&self, limit: Duration) {
        let Some(providers) = self.providers.clone() else {
            return;
        };
        let flushing = tokio::task::spawn_blocking(move || {
            let _ = providers.traces.force_flush();
            if let Some(logs) = &providers.logs {
                let _ = logs.force_flush();
            }
        });
        let _ = tokio::time::timeout(limit, flushing).await;
    }
}

/// The layer that makes `tracing` spans OpenTelemetry spans of `provider`'s.
pub(crate) fn span_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(crate::SCOPE))
        // Events are log lines and records of their own, not span events; and the spans carry
        // the attributes the semantic conventions name, not code locations.
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        // Nothing is built for a span inside a trace that is not sampled: that is what makes
        // sampling cheap. The request's server span still carries the ids (server.rs).
        .with_filter(
            dynamic_filter_fn(|meta, _| meta.is_span() && !crate::sampling::in_unsampled_trace())
                .with_callsite_filter(|meta| {
                    if meta.is_span() {
                        tracing::subscriber::Interest::sometimes()
                    } else {
                        tracing::subscriber::Interest::never()
                    }
                }),
        )
}

/// The kit's rate-limited sampler, unless `OTEL_TRACES_SAMPLER` names one: then the SDK reads
/// that, as every OpenTelemetry SDK does.
fn sampler() -> Option<crate::sampling::RateSampler> {
    use msctl_contract::env as var;
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    (!set(var::OTEL_TRACES_SAMPLER)).then(|| {
        crate::sampling::RateSampler::from_setting(
            std::env::var(var::TRACES_PER_SECOND).ok().as_deref(),
        )
    })
}

fn sampled(
    builder: opentelemetry_sdk::trace::TracerProviderBuilder,
    sampler: Option<crate::sampling::RateSampler>,
) -> opentelemetry_sdk::trace::TracerProviderBuilder {
    match sampler {
        Some(s) => {
            crate::sampling::install(s.clone());
            builder
                .with_sampler(s)
                .with_id_generator(crate::sampling::KitIds::default())
        }
        None => builder,
    }
}

/// Which events are written, from `RUST_LOG`; `info` when it is unset or invalid.
fn rust_log() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}
