//! `${NAME}`, `${NAME:-default}` and `$$` in commands, as docker compose expands them.

/// Expands `${NAME}` and `${NAME:-default}` from `lookup`, as docker compose does in its files;
/// `$$` is a `$` left as it is (`$${HOME}` reaches a shell as `${HOME}`), as in compose.
pub fn expand_vars(s: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(more) = after.strip_prefix('$') {
            out.push('$');
            rest = more;
            continue;
        }
        let Some(after) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let end = after
            .find('}')
            .ok_or_else(|| format!("`{s}` has an unclosed `${{`"))?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "`{s}` uses ${{{name}}}, which is not set; set it or write ${{{name}:-default}}"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
