//! The one guard against spreadsheet formulas in the CSVs Tally writes (the
//! dashboard's downloads and `tally export`), and its inverse for
//! `tally import`. A leaf: it imports nothing of Tally.
//!
//! Tracked values are typed by strangers, and a spreadsheet runs a cell that
//! starts with `=`, `+`, `-` or `@` (or a tab or carriage return before one)
//! as a formula. Such a cell gets a leading `'`, which spreadsheets read as
//! "text" and do not show.
//!
//! A plain decimal number (`-1.5`, `-3`: an optional `-`, digits, and
//! optionally `.` and digits) is left as it is: it is a number, not a
//! formula, and changes and some metrics are negative, so guarding it would
//! turn them into text in the sheet. Nothing else that merely parses as a
//! number is trusted: `-inf`, `-NaN`, `-1e5` and `+1` are read differently
//! by different spreadsheets, or as formulas, so they are guarded.
//!
//! A cell that already starts with `'` followed by something that starts
//! like a formula (`'=x` or `'-1.5`, typed that way by someone) gets one
//! more `'`, so that [`unguard`] takes off exactly what [`guard`] added, for
//! every string, and also reads exports of earlier versions, which guarded
//! plain negative numbers too (`'-12.50` reads back as `-12.50`).

use std::borrow::Cow;

/// `cell` as written to a CSV: with a leading `'` when a spreadsheet would
/// run it as a formula, as it is otherwise.
pub fn guard(cell: &str) -> Cow<'_, str> {
    if needs_guard(cell) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// `cell` as read from a CSV that [`guard`] wrote: its value before the
/// guard. Also reads exports of earlier versions, whose guard prefixed
/// plain negative numbers too (`'-12.50`).
pub fn unguard(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if starts_like_formula(rest) => rest,
        _ => cell,
    }
}

/// Whether [`guard`] prefixes `cell`: it starts like a formula, leading `'`s
/// skipped (so a cell that looks guarded is guarded once more and reads
/// back as itself), and is not itself a plain decimal.
fn needs_guard(cell: &str) -> bool {
    starts_like_formula(cell) && !is_plain_decimal(cell)
}

/// `cell` starts with a formula character once its leading `'`s are
/// skipped.
fn starts_like_formula(cell: &str) -> bool {
    cell.trim_start_matches('\'')
        .starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// `-?[0-9]+(\.[0-9]+)?`, and nothing else.
fn is_plain_decimal(s: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let s = s.strip_prefix('-').unwrap_or(s);
    match s.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_guarded_and_plain_numbers_are_not() {
        for (cell, written) in [
            ("=SUM(A1)", "'=SUM(A1)"),
            ("+1", "'+1"),
            ("@home", "'@home"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("-inf", "'-inf"),
            ("-NaN", "'-NaN"),
            ("-1e5", "'-1e5"),
            ("-.5", "'-.5"),
            ("-1.", "'-1."),
            ("--1", "'--1"),
            ("-", "'-"),
            ("'=x", "''=x"),
            ("''+1", "'''+1"),
            ("-1.5", "-1.5"),
            ("-3", "-3"),
            ("12.25", "12.25"),
            ("'-1.5", "''-1.5"),
            ("'", "'"),
            ("'quoted", "'quoted"),
            ("/page", "/page"),
            ("", ""),
        ] {
            assert_eq!(guard(cell), written, "{cell:?}");
        }
    }

    #[test]
    fn unguard_undoes_exactly_what_guard_adds() {
        for cell in [
            "=SUM(A1)", "-1", "-1.5", "'-1.5", "-inf", "'-inf", "'=x", "''=x", "'", "''",
            "'quoted", "@x", "+NaN", "\t", "\r\n", "/page", "",
        ] {
            assert_eq!(unguard(&guard(cell)), cell, "{cell:?}");
        }
    }

    /// Exports written before plain decimals were left alone carry `'-12.50`
    /// for a refund of 12.50; importing them gives the number back.
    #[test]
    fn exports_of_the_earlier_guard_read_back() {
        for (old, value) in [
            ("'-12.50", "-12.50"),
            ("'-1", "-1"),
            ("'-3", "-3"),
            ("'=x", "=x"),
            ("'+1", "+1"),
            ("/page", "/page"),
        ] {
            assert_eq!(unguard(old), value, "{old:?}");
        }
    }
}
