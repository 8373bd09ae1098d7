//! The rules for a new service's name: plain, short, and usable as a crate, a folder on every
//! system, a URL prefix and a variable name.

use super::ScaffoldError;

pub const MAX_NAME: usize = 30;

/// Names that would collide with the workspace, cargo's target folder, or msctl itself.
pub const RESERVED: &[&str] = &[
    "gateway",
    "kit",
    "msctl",
    "msctl-kit",
    "msctl-fixture",
    "msctl-bench",
    "fixture",
    "bench",
    "health",
    "services",
    "templates",
    "target",
    "src",
    "tests",
    "test",
    "build",
    "deps",
    "examples",
    "incremental",
    "debug",
    "release",
    "std",
    "core",
    "alloc",
    "proc-macro",
];

/// Rust keywords: a crate named after one does not compile (`fn`, `self`, `async`, …).
const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "box", "break", "const", "continue", "crate", "do", "dyn", "else",
    "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop",
    "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref", "return", "self",
    "static", "struct", "super", "trait", "true", "try", "type", "typeof", "unsafe", "unsized",
    "use", "virtual", "where", "while", "yield", "abstract", "become",
];

/// Names Windows cannot give a file or folder, whatever the extension.
fn windows_reserved(name: &str) -> bool {
    matches!(name, "con" | "prn" | "aux" | "nul")
        || ["com", "lpt"].iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|n| n.len() == 1 && n.chars().all(|c| c.is_ascii_digit()))
        })
}

/// Checks a new service name: short plain ASCII, lowercase letters, digits and dashes,
/// starting with a letter; no paths, spaces or lookalike characters.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let bad = |why: String| {
        Err(ScaffoldError::BadName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty".into());
    }
    if name.contains(['/', '\\']) || name.starts_with('.') || name.contains("..") {
        return bad("it looks like a path; give a bare name such as `billing`".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace()) {
        return bad(format!("it contains a space ({:?}); use a dash instead", c));
    }
    if let Some(c) = name.chars().find(|c| !c.is_ascii()) {
        return bad(format!(
            "it contains `{c}` (U+{:04X}), which is not plain ASCII and may pass for another letter",
            c as u32
        ));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return bad(format!(
            "it has uppercase letters; use `{}`",
            name.to_ascii_lowercase()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("it must start with a letter".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return bad(format!(
            "it contains `{c}`; use lowercase letters, digits and dashes"
        ));
    }
    if name.ends_with('-') || name.contains("--") {
        return bad("dashes go between letters or digits".into());
    }
    if name.len() > MAX_NAME {
        return bad(format!(
            "it is {} characters long; at most {MAX_NAME}",
            name.len()
        ));
    }
    if RESERVED.contains(&name) {
        return Err(ScaffoldError::Reserved(name.to_string()));
    }
    if RUST_KEYWORDS.contains(&name) {
        return bad("it is a Rust keyword, so its crate would not compile".into());
    }
    if windows_reserved(name) {
        return bad("Windows cannot use it as a folder name".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("billing"), Ok(()));
        assert_eq!(check_name("order-events2"), Ok(()));
        for bad in [
            "",
            "../x",
            "/abs",
            "a b",
            "Billing",
            "2fa",
            "bill_ing",
            "bill-",
            "bi--ll",
            "bіlling",
            &"x".repeat(31),
            "fn",
            "self",
            "crate",
            "match",
            "type",
            "async",
            "con",
            "nul",
            "aux",
            "com1",
            "lpt9",
        ] {
            assert!(
                matches!(check_name(bad), Err(ScaffoldError::BadName { .. })),
                "{bad:?} should be rejected"
            );
        }
        assert_eq!(
            check_name("gateway"),
            Err(ScaffoldError::Reserved("gateway".into()))
        );
    }
}
