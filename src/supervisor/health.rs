//! Health probes: HTTP, TCP, or none, each bounded by a timeout.

use crate::config::Health;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long one probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Prober {
    http: reqwest::Client,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// Nothing answers, or it answered badly.
    Failed(String),
    /// Something else answers on the port: another program, or an instance left behind.
    Impostor(String),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(s) | Self::Impostor(s) => f.write_str(s),
        }
    }
}

impl Default for Prober {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(PROBE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the probe client builds with no TLS and no proxy");
        Self { http }
    }
}

impl Prober {
    /// Probes `instance` at `addr` once; `Ok` holds a short summary such as `200 in 2 ms`.
    pub async fn probe(
        &self,
        health: &Health,
        addr: SocketAddr,
        instance: &str,
    ) -> Result<String, ProbeError> {
        let started = Instant::now();
        match health {
            Health::None => Ok("not checked".into()),
            Health::Tcp => {
                match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await
                {
                    Ok(Ok(_)) => Ok(format!("tcp connect in {}", ms(started.elapsed()))),
                    Ok(Err(e)) => Err(ProbeError::Failed(e.to_string())),
                    Err(_) => Err(ProbeError::Failed("tcp connect timed out".into())),
                }
            }
            Health::Http(path) => {
                let response = self
                    .http
                    .get(format!("http://{addr}{path}"))
                    .send()
                    .await
                    .map_err(|e| {
                        ProbeError::Failed(if e.is_timeout() {
                            format!("GET {path} had no answer within {}", ms(PROBE_TIMEOUT))
                        } else {
                            format!("GET {path}: {}", msctl_contract::root_cause(&e))
                        })
                    })?;
                let status = response.status();
                if !status.is_success() {
                    return Err(ProbeError::Failed(format!("GET {path} answered {status}")));
                }
                // A kit service names its instance; another name means the port is not ours.
                let body = response.bytes().await.unwrap_or_default();
                if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) {
                    if let Some(other) = json
                        .get("instance")
                        .and_then(|v| v.as_str())
                        .filter(|i| *i != instance)
                    {
                        return Err(ProbeError::Impostor(format!(
                            "port {} is answered by another process (instance {other})",
                            addr.port()
                        )));
                    }
                }
                Ok(format!("{} in {}", status.as_u16(), ms(started.elapsed())))
            }
        }
    }
}

pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}
