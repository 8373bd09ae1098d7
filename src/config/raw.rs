//! The schema of msctl.toml as written: what serde reads, before defaults and checks.

use super::{Health, Port, RestartPolicy};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManifest {
    #[serde(default)]
    pub(super) defaults: Option<RawDefaults>,
    #[serde(default)]
    pub(super) services: BTreeMap<Spanned<String>, Spanned<RawService>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) build: Option<Spanned<Vec<String>>>,
    pub(super) health: Option<Health>,
    pub(super) replicas: Option<u32>,
    pub(super) env: Option<BTreeMap<String, String>>,
    pub(super) env_file: Option<Spanned<Files>>,
    pub(super) restart: Option<RestartPolicy>,
    pub(super) stop_timeout: Option<Spanned<Seconds>>,
    pub(super) start_timeout: Option<Spanned<Seconds>>,
    pub(super) health_interval: Option<Spanned<Seconds>>,
    pub(super) unhealthy_after: Option<Spanned<u32>>,
    pub(super) max_restarts: Option<u32>,
    pub(super) watch_ignore: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) command: Option<Spanned<Vec<String>>>,
    pub(super) build: Option<Spanned<Vec<String>>>,
    pub(super) health: Option<Health>,
    pub(super) port: Option<Spanned<Port>>,
    pub(super) replicas: Option<Spanned<u32>>,
    pub(super) depends_on: Option<Vec<Spanned<String>>>,
    pub(super) env: Option<BTreeMap<String, String>>,
    pub(super) env_file: Option<Spanned<Files>>,
    pub(super) restart: Option<RestartPolicy>,
    pub(super) stop_timeout: Option<Spanned<Seconds>>,
    pub(super) start_timeout: Option<Spanned<Seconds>>,
    pub(super) health_interval: Option<Spanned<Seconds>>,
    pub(super) unhealthy_after: Option<Spanned<u32>>,
    pub(super) max_restarts: Option<u32>,
    pub(super) watch: Option<Vec<Spanned<String>>>,
    pub(super) watch_ignore: Option<Vec<Spanned<String>>>,
    pub(super) optional: Option<bool>,
    pub(super) job: Option<Spanned<bool>>,
    pub(super) profiles: Option<Vec<Spanned<String>>>,
    pub(super) install: Option<String>,
    pub(super) image: Option<String>,
    pub(super) kubernetes: Option<super::Kubernetes>,
}

/// File names written as one string or a list of them (`env_file = ".env.users"`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Files(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for Files {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Files;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a file name, or a list of file names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Files, E> {
                Ok(Files(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Files, A::Error> {
                let mut files = Vec::new();
                while let Some(f) = seq.next_element::<String>()? {
                    files.push(f);
                }
                Ok(Files(files))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as `"5s"`, `"250ms"`, `"2m"`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Seconds(pub(super) Duration);

/// A duration as people write it (`250ms`, `5s`, `2m`, `1h 30m`), parsed by humantime.
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim()).ok()
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration such as \"500ms\", \"5s\" or \"2m\", or a number of seconds",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|s| Seconds(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Duration::try_from_secs_f64(v)
                    .map(Seconds)
                    .map_err(|_| E::custom("a duration must be a positive number of seconds"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                parse_duration(v).map(Seconds).ok_or_else(|| {
                    E::custom(format!(
                        "`{v}` is not a duration; write it as \"500ms\", \"5s\" or \"2m\""
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\" or a port number from 1 to 65535")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(Port::Fixed(p)),
                    _ => Err(E::custom(format!(
                        "port {v} is out of range; use 1 to 65535 or \"auto\""
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                match v {
                    "auto" => Ok(Port::Auto),
                    _ => Err(E::custom(format!(
                        "port `{v}` is not valid; use \"auto\" or a number"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Health {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "tcp" => Ok(Health::Tcp),
            "none" => Ok(Health::None),
            p if p.starts_with('/') => Ok(Health::Http(p.to_string())),
            other => Err(de::Error::custom(format!(
                "health `{other}` is not valid; use an HTTP path such as \"/health\", \"tcp\" or \"none\""
            ))),
        }
    }
}
