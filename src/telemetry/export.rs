//! OTLP/HTTP JSON export of stored or received spans: `msctl traces export`, `msctl call`'s root
//! span, and the supervisor forwarding what it receives to an upstream collector.

use crate::error::MsctlError;
use msctl_contract::otlp::{self, Undelivered};
use msctl_contract::span::Span;
use std::time::Duration;
use tokio::sync::mpsc;

/// Posts one batch as OTLP/HTTP JSON, retrying where the OTLP spec allows. A receiver that
/// cannot be reached (12) is kept apart from one that answered and refused (13).
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    spans: &[Span],
    headers: &[(String, String)],
    attempts: u32,
) -> Result<(), MsctlError> {
    let body = serde_json::to_vec(&otlp::export_request(spans)).unwrap_or_default();
    let post = || {
        let mut request = client.post(url).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(body.clone()).timeout(Duration::from_secs(10));
        async move {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let answer = response.bytes().await.unwrap_or_default().to_vec();
            Ok::<_, reqwest::Error>((status, retry_after, answer))
        }
    };
    otlp::deliver(attempts, post, tokio::time::sleep)
        .await
        .map_err(|e| match e {
            Undelivered::Unreachable(e) => MsctlError::Unreachable(format!(
                "the OTLP receiver at {url} could not be reached: {}",
                msctl_contract::root_cause(&e)
            )),
            Undelivered::Partial { rejected, message } => MsctlError::Rejected(format!(
                "the OTLP receiver at {url} rejected {rejected} of {} span(s): {message}",
                spans.len()
            )),
            Undelivered::Refused { status, body } => MsctlError::Rejected(format!(
                "the OTLP receiver at {url} was reached but answered {status}: {body}"
            )),
        })
}

/// Spans forwarded in one request, at most.
const FORWARD_BATCH: usize = 512;

/// Sends what the receiver takes in on to `url`, in batches, as it comes. Failures are told
/// once per kind in a row on the supervisor's stderr, and the batch is dropped.
pub async fn forward(url: String, mut rx: mpsc::Receiver<Vec<Span>>) {
    let Ok(client) = reqwest::Client::builder().no_proxy().build() else {
        return;
    };
    let mut last_error = String::new();
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < FORWARD_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        match send(&client, &url, &batch, &[], 3).await {
            Ok(()) => last_error.clear(),
            Err(e) => {
                let message = e.to_string();
                if message != last_error {
                    say!("msctl: forwarding spans failed; these are dropped: {message}");
                    last_error = message;
                }
            }
        }
    }
}
