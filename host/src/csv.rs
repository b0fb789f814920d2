//! Every CSV the server writes goes through [`row`], so that no cell can
//! carry a spreadsheet formula.
//!
//! Values in an export come from outside: attribute values pushed by an HR
//! system or a SCIM client, request ids sent by any client. A cell that
//! starts with `=`, `+`, `-`, `@`, a tab or a carriage return is run as a
//! formula when an admin opens the file in a spreadsheet (OWASP, "CSV
//! Injection"): `=HYPERLINK("http://evil", "click")` becomes a live link,
//! and worse. Such a cell is prefixed with a single quote, which spreadsheets
//! read as "this is text", and quoted. The full-width forms of the same
//! characters are treated alike, since some spreadsheets normalise them.
//! Whitespace and control characters before such a character do not make
//! the cell safe: spreadsheets that trim cells on import (an option in
//! LibreOffice, the default of some importers) see the formula all the
//! same, so ` =1+1` and `\n@SUM(A1)` are neutralised too.
//! The cost is that a negative number such as `-5` is exported as `'-5`;
//! an export is for people to read, so that is the right side to err on.

use std::borrow::Cow;

/// Characters that make a spreadsheet read a cell as a formula.
const FORMULA_STARTS: [char; 10] = ['=', '+', '-', '@', '\t', '\r', '＝', '＋', '－', '＠'];

/// One cell: neutralised if it could be read as a formula, and quoted
/// (RFC 4180) when it is neutralised or holds a comma, quote or line break.
pub fn cell(s: &str) -> Cow<'_, str> {
    let formula = s
        .trim_start_matches(|c: char| c.is_whitespace() || c.is_control())
        .starts_with(FORMULA_STARTS)
        || s.starts_with(FORMULA_STARTS);
    if !formula && !s.contains([',', '"', '\n', '\r']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 4);
    out.push('"');
    if formula {
        out.push('\'');
    }
    for c in s.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    Cow::Owned(out)
}

/// One record: the cells, each through [`cell`], joined by commas and ended
/// by CRLF (RFC 4180).
pub fn row<'a>(cells: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, c) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&cell(c));
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_cells_are_kept_and_special_ones_quoted() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell(""), "");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(
            cell("a=b"),
            "a=b",
            "only a leading formula character counts"
        );
    }

    #[test]
    fn formula_cells_are_neutralised() {
        assert_eq!(
            cell("=HYPERLINK(\"http://evil\")"),
            "\"'=HYPERLINK(\"\"http://evil\"\")\""
        );
        assert_eq!(cell("+1+1"), "\"'+1+1\"");
        assert_eq!(cell("-2+3"), "\"'-2+3\"");
        assert_eq!(cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(cell("\t=1"), "\"'\t=1\"");
        assert_eq!(cell("\r=1"), "\"'\r=1\"");
        assert_eq!(cell("＝1+1"), "\"'＝1+1\"");
    }

    #[test]
    fn formulas_behind_leading_whitespace_are_neutralised() {
        for s in [
            " =1+1",
            "  +1+1",
            "\n-2+3",
            "\u{a0}@SUM(A1)",
            "\u{3000}＝1",
            "\u{0}=1",
            " \t=1",
        ] {
            let out = cell(s);
            assert!(out.starts_with("\"'"), "{s:?} gave {out:?}");
        }
        // Whitespace alone, or before ordinary text, stays as it is.
        assert_eq!(cell(" plain"), " plain");
        assert_eq!(cell("   "), "   ");
    }

    #[test]
    fn rows_join_cells_and_end_with_crlf() {
        assert_eq!(row(["a", "=b", "c,d"]), "a,\"'=b\",\"c,d\"\r\n");
        assert_eq!(row([]), "\r\n");
    }
}
