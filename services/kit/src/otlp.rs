//! Live OTLP export from a service: posts spans in the contract's OTLP JSON shape
//! (msctl_contract::otlp), retrying only where the protocol says a retry may succeed.

pub use msctl_contract::otlp::{SCOPE, Verdict, export_request, traces_url};
use msctl_contract::otlp::{retry_pause, verdict};
use msctl_contract::span::Span;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the OTLP receiver at {url} could not be reached: {message}")]
    Unreachable { url: String, message: String },
    #[error("the OTLP receiver at {url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the OTLP receiver at {url} rejected {rejected} span(s): {message}")]
    Partial {
        url: String,
        rejected: u64,
        message: String,
    },
}

/// Posts `spans` to `url` (a full `/v1/traces` URL), making up to `attempts` attempts when the
/// receiver answers 429, 502, 503 or 504.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    spans: &[Span],
    attempts: u32,
) -> Result<(), ExportError> {
    let body = serde_json::to_vec(&export_request(spans)).unwrap_or_default();
    let attempts = attempts.max(1);
    let mut attempt = 1;
    loop {
        let mut request = client.post(url).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request
            .body(body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| ExportError::Unreachable {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let answer = response.bytes().await.unwrap_or_default();
        match verdict(status, &answer) {
            Verdict::Accepted => return Ok(()),
            Verdict::Partial { rejected, message } => {
                return Err(ExportError::Partial {
                    url: url.to_string(),
                    rejected,
                    message,
                });
            }
            Verdict::Retry if attempt < attempts => {
                tokio::time::sleep(retry_pause(attempt, retry_after)).await;
                attempt += 1;
            }
            Verdict::Retry => {
                return Err(ExportError::Refused {
                    url: url.to_string(),
                    status,
                    body: String::from_utf8_lossy(&answer).chars().take(300).collect(),
                });
            }
            Verdict::Refused { status, body } => {
                return Err(ExportError::Refused {
                    url: url.to_string(),
                    status,
                    body,
                });
            }
        }
    }
}
