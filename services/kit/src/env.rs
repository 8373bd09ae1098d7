//! The environment contract (docs/environment.md): what msctl gives a service, with defaults for a service
//! started by hand.

use msctl_contract::env as var;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a service reads from its environment, resolved once at start.
#[derive(Debug, Clone)]
pub struct ServiceEnv {
    pub service: String,
    pub instance: String,
    pub addr: SocketAddr,
    /// `None` when no registry is given: peers then come from `<NAME>_URL` variables only.
    pub registry: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// Timeout of every call to another service.
    pub peer_timeout: Duration,
    /// How long in-flight requests may run on after a shutdown signal.
    pub drain_timeout: Duration,
}

/// The port a service listens on when neither `MSCTL_ADDR` nor `PORT` is set.
pub const DEFAULT_PORT: u16 = 8080;

impl ServiceEnv {
    /// Reads the process environment. `default_name` is used when `MSCTL_SERVICE` is unset.
    pub fn from_process(default_name: &str) -> Result<Self, String> {
        Self::from_lookup(default_name, |key| std::env::var(key).ok())
    }

    /// Reads the contract through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(
        default_name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let service = lookup(var::SERVICE).unwrap_or_else(|| default_name.to_string());
        let instance = lookup(var::INSTANCE).unwrap_or_else(|| format!("{service}-1"));
        // A container's service must answer other pods: only there, and only when asked
        // for by name, may it listen beyond loopback.
        if let Some(listen) = lookup(var::LISTEN) {
            let addr = listen.parse::<SocketAddr>().map_err(|e| {
                format!("MSCTL_LISTEN={listen:?} is not an address like 0.0.0.0:8080: {e}")
            })?;
            return Self::with_addr(service, instance, addr, &lookup);
        }
        let addr = match (lookup(var::ADDR), lookup(var::PORT)) {
            (Some(addr), _) => addr.parse::<SocketAddr>().map_err(|e| {
                format!("MSCTL_ADDR={addr:?} is not an address like 127.0.0.1:8080: {e}")
            })?,
            (None, Some(port)) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| format!("PORT={port:?} is not a port number (0-65535)"))?;
                SocketAddr::from(([127, 0, 0, 1], port))
            }
            (None, None) => SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
        };
        if !addr.ip().is_loopback() {
            return Err(format!(
                "refusing to listen on {addr}: msctl services listen on loopback only (use 127.0.0.1)"
            ));
        }
        Self::with_addr(service, instance, addr, &lookup)
    }

    fn with_addr(
        service: String,
        instance: String,
        addr: SocketAddr,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let data_dir = lookup(var::DATA_DIR)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".msctl/data").join(&service));
        let millis = |key: &str, default: u64| -> Result<Duration, String> {
            match lookup(key) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => v
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("{key}={v:?} is not a whole number of milliseconds")),
            }
        };
        Ok(Self {
            instance,
            addr,
            registry: lookup(var::REGISTRY).map(PathBuf::from),
            data_dir,
            peer_timeout: millis(var::PEER_TIMEOUT_MS, 2000)?,
            drain_timeout: millis(var::DRAIN_TIMEOUT_MS, 5000)?,
            service,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<ServiceEnv, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ServiceEnv::from_lookup("users", |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_let_a_service_run_by_hand() {
        let e = env(&[]).unwrap();
        assert_eq!(e.service, "users");
        assert_eq!(e.instance, "users-1");
        assert_eq!(e.addr, "127.0.0.1:8080".parse().unwrap());
        assert!(e.registry.is_none());
        assert_eq!(e.peer_timeout, Duration::from_secs(2));
    }

    #[test]
    fn msctl_addr_wins_over_port() {
        let e = env(&[("MSCTL_ADDR", "127.0.0.1:4000"), ("PORT", "5000")]).unwrap();
        assert_eq!(e.addr.port(), 4000);
        assert_eq!(env(&[("PORT", "5000")]).unwrap().addr.port(), 5000);
    }

    #[test]
    fn only_msctl_listen_may_leave_loopback() {
        let e = env(&[
            ("MSCTL_LISTEN", "0.0.0.0:8080"),
            ("MSCTL_DATA_DIR", "/data"),
        ])
        .unwrap();
        assert_eq!(e.addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(e.data_dir, PathBuf::from("/data"));
        assert!(
            env(&[("MSCTL_LISTEN", "everywhere")])
                .unwrap_err()
                .contains("MSCTL_LISTEN")
        );
        // PORT and MSCTL_ADDR stay on loopback.
        assert!(env(&[("MSCTL_ADDR", "0.0.0.0:80")]).is_err());
    }

    #[test]
    fn bad_values_are_named() {
        assert!(
            env(&[("PORT", "http")])
                .unwrap_err()
                .contains("PORT=\"http\"")
        );
        assert!(
            env(&[("MSCTL_ADDR", "0.0.0.0:80")])
                .unwrap_err()
                .contains("loopback")
        );
        assert!(
            env(&[("MSCTL_PEER_TIMEOUT_MS", "2s")])
                .unwrap_err()
                .contains("MSCTL_PEER_TIMEOUT_MS")
        );
    }
}
