//! Every limit on the size and nesting of outside input, in one place.
//!
//! A parser or walker that recurses once per level of its input uses one
//! stack frame per level, and a request runs on a Tokio worker thread with a
//! 2 MiB stack. Input from outside (a SCIM client, an admin, a plugin
//! directory, a backup file) can nest as deep as it likes, so every such
//! parser checks its input against a limit from this module *before* it
//! recurses, and refuses deeper or longer input with a 4xx that names the
//! limit. The numbers are chosen far above anything a real client sends
//! (the existing tests, benchmarks and the CEL conformance data all fit with
//! room to spare) and far below what would strain a request thread.
//!
//! The limits are documented for admins in README.md ("Limits") and in the
//! docs of each surface (docs/scim.md, docs/groups.md, docs/cel.md,
//! docs/federation.md).

#[cfg(test)]
mod hostile;

/// Deepest nesting of objects and arrays in a JSON request body.
///
/// serde_json stops at 128 levels on its own, but a stored document wraps
/// what the client sent in a few more levels (a group wraps its rule, a SCIM
/// user its extension objects); a body at 127 levels would be stored and
/// then fail to read back, breaking every list that contains it. 64 leaves
/// that headroom, and no Cohort body needs more than about 8 levels.
pub const MAX_JSON_DEPTH: usize = 64;

/// Longest request target (path and query string), in bytes. Long enough
/// for a SCIM filter at its own limit after percent-encoding and any list
/// query an admin writes by hand; short enough that a request cannot make
/// the server split and decode megabytes before refusing it.
pub const MAX_URI_BYTES: usize = 32 * 1024;

/// Longest SCIM filter (or PATCH path filter), in bytes. Okta and Entra ID
/// send filters of one or two comparisons (`userName eq "…"`); 8 KiB allows
/// an OR of a hundred ids.
pub const MAX_FILTER_BYTES: usize = 8 * 1024;

/// Deepest nesting of parentheses, `not (…)` and `attr[…]` in a SCIM filter.
/// Parsing, evaluating and dropping a filter recurse once per level.
pub const MAX_FILTER_DEPTH: usize = 32;

/// Most comparisons in one SCIM filter. `a or b or c …` builds a tree one
/// level deeper per link, which evaluating and dropping walk recursively, so
/// the chain length needs a bound of its own besides the nesting depth.
pub const MAX_FILTER_TERMS: usize = 256;

/// Longest CEL expression, in bytes. Rules that need more are better split
/// into groups that refer to each other.
pub const MAX_EXPRESSION_BYTES: usize = 4096;

/// Deepest CEL syntax tree (and deepest bracket nesting in its source,
/// checked before the text reaches the `cel` parser). Parsing, checking,
/// instrumenting, evaluating and dropping a tree recurse once per level.
/// The CEL conformance data the project tests against nests at most 12.
pub const MAX_EXPRESSION_DEPTH: usize = 48;

/// Most conditions in one group rule (or exclusion), counting every block
/// and the rules of conditions on related subjects. The largest rules in
/// the tests and benchmarks have a few dozen.
pub const MAX_RULE_CONDITIONS: usize = 1000;

/// Longest chain of group references (`member_of`, `not_member_of`,
/// `in_group(…)`): A refers to B refers to C … Each link is one more stage
/// of evaluation, and the planner walks the chain.
pub const MAX_REFERENCE_DEPTH: usize = 32;

/// Most rules in the sign-in routing document.
pub const MAX_ROUTING_RULES: usize = 200;

/// Most domains in one `email_domain` routing condition.
pub const MAX_ROUTING_DOMAINS: usize = 1000;

/// Largest plugin manifest file (`<name>.toml`), in bytes. Real manifests
/// are about 1 KiB.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// Deepest nesting of arrays, inline tables and dotted keys in a plugin
/// manifest. The manifest's own shape nests 3 deep.
pub const MAX_MANIFEST_DEPTH: usize = 16;

/// Most operations in one SCIM Bulk request; advertised in
/// `ServiceProviderConfig`.
pub const MAX_BULK_OPERATIONS: usize = 1000;

/// Input nested deeper than a limit allows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("nested more than {limit} levels deep at byte {offset}")]
pub struct TooDeep {
    /// The limit that was passed.
    pub limit: usize,
    /// Byte offset of the bracket that went one level too deep.
    pub offset: usize,
}

/// Checks that a JSON text nests objects and arrays at most `limit` deep,
/// without parsing it: a scan over the bytes that skips string contents.
/// Malformed JSON passes (the parser says what is wrong with it); only the
/// depth is judged here, so that the parser never recurses past `limit`.
pub fn json_depth(text: &[u8], limit: usize) -> Result<(), TooDeep> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, &b) in text.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(TooDeep { limit, offset });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The deepest bracket nesting of a CEL source, with the offset where it
/// first passes `limit`. Quoted strings (single, double, triple-quoted, raw)
/// are skipped; unary `!` and `-` runs count as nesting too, since the
/// parser recurses once per operator.
pub fn expression_depth(source: &str, limit: usize) -> Result<(), TooDeep> {
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut unary = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' | b'\'' => {
                let raw = i > 0 && matches!(bytes[i - 1], b'r' | b'R');
                i = past_string(bytes, i, !raw);
                unary = 0;
                continue;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth + unary > limit {
                    return Err(TooDeep { limit, offset: i });
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'!' | b'-' if bytes.get(i + 1) != Some(&b'=') => {
                unary += 1;
                if depth + unary > limit {
                    return Err(TooDeep { limit, offset: i });
                }
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        // Anything but another unary operator ends a run of them.
        if !matches!(b, b'(' | b'[' | b'{') {
            unary = 0;
        }
        i += 1;
    }
    Ok(())
}

/// The index just past the string that opens at `start` (a quote, or three
/// of them), or past the end when it is never closed. With `escapes`, a
/// backslash hides the character after it.
fn past_string(bytes: &[u8], start: usize, escapes: bool) -> usize {
    let quote = bytes[start];
    let close: &[u8] = if bytes[start..].starts_with(&[quote, quote, quote]) {
        &bytes[start..start + 3]
    } else {
        &bytes[start..=start]
    };
    let mut j = start + close.len();
    while j < bytes.len() && !bytes[j..].starts_with(close) {
        if escapes && bytes[j] == b'\\' {
            j += 1;
        }
        j += 1;
    }
    j + close.len()
}

/// Checks that a TOML text nests at most `limit` deep, without parsing it.
/// Nesting is counted as open arrays and inline tables plus the dots of
/// a dotted key (`a.b.c = 1` and `[a.b.c]` nest tables as deep as
/// brackets do), on any line; strings and comments are skipped. A plugin
/// manifest has no floats or dates outside strings, so counting every dot
/// outside a string errs only on the side of refusing.
pub fn toml_depth(text: &str, limit: usize) -> Result<(), TooDeep> {
    let bytes = text.as_bytes();
    let mut brackets = 0usize;
    let mut dots = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' | b'\'' => {
                // TOML's literal strings ('…') have no escapes.
                i = past_string(bytes, i, b == b'"');
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'\n' => dots = 0,
            b'.' => dots += 1,
            b'[' | b'{' => brackets += 1,
            b']' | b'}' => brackets = brackets.saturating_sub(1),
            _ => {}
        }
        if brackets + dots > limit {
            return Err(TooDeep { limit, offset: i });
        }
        i += 1;
    }
    Ok(())
}

/// Largest value (string, bytes, list or map, counted deeply in bytes) one
/// step of a CEL evaluation may produce. A rule compares attributes, which
/// are short; 64 KiB is a thousand times an e-mail address and keeps one
/// function call's own allocation small.
pub const MAX_EXPRESSION_VALUE_BYTES: u64 = 64 * 1024;

/// Bytes of values one CEL evaluation (one subject, one expression) may
/// produce in all. Each function result, list element and concatenation is
/// charged; a replace, join or split whose result would pass either limit
/// is refused before it allocates.
pub const MAX_EXPRESSION_EVAL_BYTES: u64 = 2 * 1024 * 1024;

/// The largest compiled program (and lazy DFA cache) a `matches` pattern
/// may have. A pattern compiles under 32 KiB first (anchors, literals,
/// ASCII classes), then 64 and 128 KiB (a Unicode `\w` or two), and under
/// this only if it must; a literal pattern is checked against it when a
/// rule is saved. 256 KiB takes `\w{4}`; `\w{20}`, over a megabyte, is
/// refused.
pub const MAX_PATTERN_PROGRAM_BYTES: usize = 256 * 1024;

/// Bytes of compiled patterns one CEL evaluation may use: each distinct
/// pattern, on its first use in an evaluation, is charged six times the
/// limit it compiled under (what its forward and reverse programs and lazy
/// DFA caches may hold), whether or not it was cached. 4 MiB is twenty
/// small patterns, five with a `\w`, or two of the largest; each thread
/// caches twice this between evaluations.
pub const MAX_EXPRESSION_PATTERN_BYTES: u64 = 4 * 1024 * 1024;

/// Bytes of string a CEL search (`indexOf`, `lastIndexOf`, `contains`,
/// `startsWith`, `endsWith`, `matches`) may scan per unit of the work
/// budget. A scan of 1 KiB takes about a microsecond, as long as the
/// cheapest loop step, so the 10,000 units of an evaluation scan at most
/// 10 MiB.
pub const EXPRESSION_SCAN_BYTES_PER_UNIT: u64 = 1024;

/// How long one routing expression may evaluate for one user at sign-in
/// before it is taken as not matching (and logged). Routing runs on an
/// async worker in an unauthenticated request; the work budget already
/// keeps a rule to milliseconds, and this caps what a slow machine makes
/// of it.
pub const ROUTING_EXPRESSION_DEADLINE: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a group preview or explanation may evaluate before it is
/// refused (`too_slow`). Previewing a rule over 100,000 users takes well
/// under a second; the deadline is there for rules that are slow per
/// subject, which any reader may send.
pub const INSPECT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        assert!(json_depth(br#"{"a": [1, {"b": 2}]}"#, 3).is_ok());
        assert_eq!(
            json_depth(br#"{"a": [1, {"b": 2}]}"#, 2),
            Err(TooDeep {
                limit: 2,
                offset: 10
            })
        );
        assert!(json_depth(br#"{"a": "[[[[[[\"[[[["}"#, 1).is_ok());
        assert!(json_depth(&[b'['; 10_000], MAX_JSON_DEPTH).is_err());
        assert!(json_depth(b"]]]]{}", 1).is_ok());
    }

    #[test]
    fn toml_depth_counts_brackets_and_dotted_keys() {
        let manifest = "name = 'x'\nversion = \"1.0.0\" # a.b.c.d\nallowed_hosts = [\"a.b.c.d.e\"]\n\n[[config]]\nname = 'k'\n";
        assert!(toml_depth(manifest, 2).is_ok());
        assert!(toml_depth(&format!("a = {}", "[".repeat(100)), 16).is_err());
        assert!(toml_depth(&format!("a = {}", "{ b = ".repeat(100)), 16).is_err());
        assert!(toml_depth(&format!("{} = 1", vec!["k"; 100].join(".")), 16).is_err());
        assert!(toml_depth(&format!("[{}]", vec!["k"; 100].join(".")), 16).is_err());
        assert!(toml_depth("a = \"\"\"\n[[[[[[\n\"\"\"", 1).is_ok());
    }

    #[test]
    fn expression_depth_counts_brackets_and_unary_runs() {
        assert!(expression_depth("(user.a == 'x') && [1, 2].all(x, x > 0)", 3).is_ok());
        assert!(expression_depth("((((true))))", 3).is_err());
        assert!(expression_depth("'(((((' == \"))))(((\"", 1).is_ok());
        assert!(expression_depth("'''((((''' == r'\\(((('", 1).is_ok());
        assert!(expression_depth(&"!".repeat(10), 5).is_err());
        assert!(expression_depth(&format!("{}1", "-".repeat(10)), 5).is_err());
        assert!(expression_depth("1 - 2 - 3 - 4 - 5 - 6 - 7", 2).is_ok());
        assert!(expression_depth("a != b && !c", 1).is_ok());
    }
}
