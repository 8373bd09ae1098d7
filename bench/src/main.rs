//! msctl's benchmarks. Each prints a table of figures and ratios measured in the same run, on the
//! same binaries, timed by the same poller: figures, not pass/fail, since machines are noisy.
//!
//! `cargo run --release -p msctl-bench -- startup`   time to all healthy: msctl, honcho, bare shell
//! `cargo run --release -p msctl-bench -- tracing`   throughput with tracing on/off; msctl call vs curl;
//!                                                    then the `telemetry` figures
//! `cargo run --release -p msctl-bench -- scale`     3, 10 and 30 scaffolded services against a shell
//! `cargo run --release -p msctl-bench -- telemetry` trace queries over 100,000 stored spans; intake
//! `cargo run --release -p msctl-bench -- proxy`     the data path against nginx and a bare server
//! `cargo run --release -p msctl-bench -- watch`     save to new code serving under watch mode
//! `cargo run --release -p msctl-bench -- bus`       events per second and delay, users → nats → posts
//! `cargo run --release -p msctl-bench -- dashboard` page load, call → trace in the page, cost

mod bus;
mod dashboard;
mod harness;
mod proxy;
mod scale;
mod startup;
mod telemetry;
mod tracing;
mod watch;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    match args.first().map(String::as_str) {
        Some("startup") => startup::run(runs),
        Some("tracing") => tracing::run(runs),
        Some("scale") => scale::run(runs),
        Some("telemetry") => telemetry::run(runs),
        Some("proxy") => proxy::run(runs),
        Some("watch") => watch::run(runs),
        Some("bus") => bus::run(runs),
        Some("dashboard") => dashboard::run(runs),
        _ => {
            eprintln!(
                "usage: msctl-bench startup|tracing|scale|telemetry|proxy|watch|bus|dashboard [--runs N]"
            );
            std::process::exit(2);
        }
    }
}
