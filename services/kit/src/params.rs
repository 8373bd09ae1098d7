//! Parsing of ids and paging parameters, with errors that say what a valid value looks like.

use crate::ApiError;
use std::collections::HashMap;

/// Parses a path id: a positive whole number that fits a database row id.
pub fn parse_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::bad_request(format!(
            "{what} must be a positive whole number, got {raw:?}"
        ))),
    }
}

/// A page of a list: `?limit=&offset=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub limit: i64,
    pub offset: i64,
}

impl Paging {
    /// `LIMIT n OFFSET m` with the numbers written in, for the end of a query. Bound as
    /// parameters instead, they make SQLite compile the statement afresh at every run (it
    /// plans with a bound LIMIT's value, so binding one expires the plan). The numbers are
    /// checked integers, so writing them in is safe, and a client's usual page is one cached
    /// statement.
    pub fn sql(&self) -> String {
        format!("LIMIT {} OFFSET {}", self.limit, self.offset)
    }

    /// The largest page a client may ask for.
    pub const MAX_LIMIT: i64 = 100;
    pub const DEFAULT_LIMIT: i64 = 20;
    /// Offsets past this are surely mistakes, and SQLite would scan for nothing.
    pub const MAX_OFFSET: i64 = 1_000_000_000;

    pub fn from_query(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let limit = match query.get("limit") {
            None => Self::DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=Self::MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "limit must be a whole number from 1 to {}, got {raw:?}",
                        Self::MAX_LIMIT
                    )));
                }
            },
        };
        let offset = match query.get("offset") {
            None => 0,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (0..=Self::MAX_OFFSET).contains(&n) => n,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "offset must be a whole number from 0 to {}, got {raw:?}",
                        Self::MAX_OFFSET
                    )));
                }
            },
        };
        Ok(Self { limit, offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ids_must_be_positive_integers() {
        assert_eq!(parse_id("7", "user id").unwrap(), 7);
        for bad in ["0", "-1", "abc", "1.5", "99999999999999999999", ""] {
            let err = parse_id(bad, "user id").unwrap_err();
            assert_eq!(err.status, 400, "{bad}");
            assert!(err.message.contains("user id"));
        }
    }

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(
            Paging::from_query(&q(&[])).unwrap(),
            Paging {
                limit: 20,
                offset: 0
            }
        );
        assert_eq!(
            Paging::from_query(&q(&[("limit", "100"), ("offset", "5")])).unwrap(),
            Paging {
                limit: 100,
                offset: 5
            }
        );
        for (k, v) in [
            ("limit", "0"),
            ("limit", "-3"),
            ("limit", "101"),
            ("limit", "1e9"),
            ("offset", "-1"),
            ("offset", "99999999999999999999"),
        ] {
            let err = Paging::from_query(&q(&[(k, v)])).unwrap_err();
            assert!(err.message.starts_with(k), "{k}={v}: {}", err.message);
        }
    }
}
