//! JSON for people: pretty-printed, and coloured when the output is a terminal.

use serde_json::Value;
use std::fmt::Write;

/// `value` indented by two spaces; keys, strings, numbers and literals coloured when `colour`.
pub fn pretty(value: &Value, colour: bool) -> String {
    if !colour {
        return serde_json::to_string_pretty(value).unwrap_or_default();
    }
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out
}

fn write_value(out: &mut String, value: &Value, depth: usize) {
    let pad = "  ".repeat(depth + 1);
    let end_pad = "  ".repeat(depth);
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (k, v)) in map.iter().enumerate() {
                let key = serde_json::to_string(k).unwrap_or_default();
                let _ = write!(
                    out,
                    "{pad}{}: ",
                    console::style(key).blue().bold().for_stdout()
                );
                write_value(out, v, depth + 1);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{end_pad}}}");
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                out.push_str(&pad);
                write_value(out, v, depth + 1);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{end_pad}]");
        }
        Value::String(_) => {
            let _ = write!(
                out,
                "{}",
                console::style(value.to_string()).green().for_stdout()
            );
        }
        Value::Number(_) => {
            let _ = write!(
                out,
                "{}",
                console::style(value.to_string()).cyan().for_stdout()
            );
        }
        Value::Bool(_) | Value::Null => {
            let _ = write!(
                out,
                "{}",
                console::style(value.to_string()).magenta().for_stdout()
            );
        }
        other => out.push_str(&other.to_string()),
    }
}
