//! Whether one value passes one filter, in memory: the rules of
//! [`crate::report::sqlite::filter`] (where they are written out, beside
//! the SQL that must agree) for the engines that read values rather than
//! run SQL: recent traffic and the column store. A leaf of `report`: it
//! imports only the report model, so the column store can use it without
//! knowing SQLite.

use crate::report::model::{Filter, FilterField, FilterOp};

/// Whether a property key can be named in the raw tables' JSON path
/// (`$."key"`): not with `"` or `\`, which SQLite's path does not read as
/// the key. Every engine treats such a key as a property no event has.
pub fn prop_key_named(key: &str) -> bool {
    !key.contains(['"', '\\'])
}

/// Whether a value (or its absence) passes `f`, as the SQL does.
pub fn value_matches(f: &Filter, value: Option<&str>) -> bool {
    let any = match value {
        None => {
            let has_none = f.values.iter().any(Option::is_none);
            return match f.op {
                FilterOp::IsNot => !has_none,
                _ => has_none,
            };
        }
        Some(value) => f.values.iter().any(|want| match want {
            None => false,
            Some(w) => match f.op {
                FilterOp::Contains => value.to_ascii_lowercase().contains(&w.to_ascii_lowercase()),
                _ if f.field == FilterField::Page && w.contains('*') => {
                    glob(&w.replace("**", "*"), value)
                }
                _ => value == w,
            },
        }),
    };
    if f.op == FilterOp::IsNot { !any } else { any }
}

/// `*` matches any run of characters; everything else is literal.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_has_one_wildcard() {
        assert!(glob("/blog/*", "/blog/a/b"));
        assert!(glob("/blog*", "/blog"));
        assert!(glob("*/new", "/a/new"));
        assert!(glob("/a*b*c", "/axbyc"));
        assert!(!glob("/a*b*c", "/axcyb"));
        assert!(!glob("/a?", "/ab"));
        assert!(glob("/a?", "/a?"));
        assert!(!glob("/ab*ba", "/aba"));
    }
}
