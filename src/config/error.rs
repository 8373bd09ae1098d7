//! Errors in msctl.toml, located to the line and column with the offending line shown, and the
//! wording of the TOML parser's errors made a user's.

use super::MANIFEST;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A problem in msctl.toml, located to the line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
    /// The offending line and a caret under the offending part.
    pub snippet: String,
}

impl ConfigError {
    pub(super) fn at(
        path: &Path,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let source = &text[line_start..line_end];
        let width = text[start..span.end.clamp(start, line_end)]
            .chars()
            .count()
            .max(1);
        let gutter = line.to_string().len();
        let snippet = format!(
            "{:gutter$} |\n{line} | {source}\n{:gutter$} | {}{}",
            "",
            "",
            " ".repeat(column - 1),
            "^".repeat(width)
        );
        Self {
            path: path.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint,
            snippet,
        }
    }
}

/// Why no config could be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no {MANIFEST} in {} or any parent folder", .0.display())]
    NotFound(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

pub(super) fn from_toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim().to_string();
    // serde's words for an unknown key are "unknown field `x`, expected one of ..."; say it our way,
    // with the nearest known key as a suggestion.
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or_default();
        let known: Vec<&str> = rest
            .split('`')
            .skip(2)
            .step_by(2)
            .filter(|k| !k.is_empty())
            .collect();
        let hint = did_you_mean(key, known.iter().copied()).map(|k| format!("did you mean `{k}`?"));
        let hint = hint
            .or_else(|| (!known.is_empty()).then(|| format!("known keys: {}", known.join(", "))));
        return ConfigError::at(path, text, span, format!("unknown key `{key}`"), hint);
    }
    // serde says "sequence" where a TOML user thinks "array"; the example fits the key.
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let key = text[line_start..start]
        .split('=')
        .next()
        .unwrap_or_default()
        .trim();
    let example = match key {
        "command" | "build" => " such as [\"program\", \"arg\"]",
        "depends_on" => " of service names such as [\"users\"]",
        _ => "",
    };
    let message = message.replace(
        "expected a sequence",
        &format!("expected an array{example}"),
    );
    ConfigError::at(path, text, span, message, None)
}

/// The closest of `candidates` to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
