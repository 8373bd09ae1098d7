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
        let width = text[start..span.end.clamp(start, line_end)]
            .chars()
            .count()
            .max(1);
        let (source, offset, width) = window(&text[line_start..line_end], column - 1, width);
        let gutter = line.to_string().len();
        let snippet = format!(
            "{:gutter$} |\n{line} | {source}\n{:gutter$} | {}{}",
            "",
            "",
            " ".repeat(offset),
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

/// Characters of a long line shown before and after the offending part.
const SHOWN_BEFORE: usize = 40;
const SHOWN_AFTER: usize = 60;

/// The part of `source` to show around the char at `column` (0-based) spanning `width` chars,
/// with where the caret goes in it and how wide: a generated or minified msctl.toml can hold a
/// line of megabytes, and the error should show where the problem is, not the whole line.
fn window(source: &str, column: usize, width: usize) -> (String, usize, usize) {
    let chars = source.chars().count();
    let width = width.min(SHOWN_AFTER);
    if chars <= SHOWN_BEFORE + SHOWN_AFTER + width {
        return (source.to_string(), column, width);
    }
    let from = column.saturating_sub(SHOWN_BEFORE);
    let to = (column + width + SHOWN_AFTER).min(chars);
    let mut shown = String::new();
    if from > 0 {
        shown.push('…');
    }
    shown.extend(source.chars().skip(from).take(to - from));
    if to < chars {
        shown.push('…');
    }
    (shown, column - from + usize::from(from > 0), width)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_shown_around_the_problem_with_the_caret_under_it() {
        let text = format!("x = [{}], y = @", "1, ".repeat(5000));
        let at = text.find('@').unwrap();
        let e = ConfigError::at(Path::new("msctl.toml"), &text, at..at + 1, "bad", None);
        assert_eq!(e.column, at + 1);
        let lines: Vec<&str> = e.snippet.lines().collect();
        assert!(lines[1].len() < 200, "{}", lines[1]);
        assert!(lines[1].starts_with("1 | …"), "{}", lines[1]);
        assert!(lines[1].ends_with("y = @"), "{}", lines[1]);
        let shown: Vec<char> = lines[1].chars().collect();
        let caret = lines[2].chars().position(|c| c == '^').unwrap();
        assert_eq!(shown[caret], '@');
    }

    #[test]
    fn a_short_line_is_shown_whole() {
        let text = "name = 1\ncomand = [\"a\"]\n";
        let at = text.find("comand").unwrap();
        let e = ConfigError::at(Path::new("msctl.toml"), text, at..at + 6, "bad", None);
        assert_eq!(e.snippet, "  |\n2 | comand = [\"a\"]\n  | ^^^^^^");
    }
}
