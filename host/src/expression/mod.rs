//! CEL expressions for advanced rules.
//!
//! Admins write rules such as
//! `user.department == 'Engineering' && user.devices.exists(d, d.os_family == 'macos')`.
//! This module is the only place that knows the `cel` crate: the rest of
//! Cohort compiles an [`Expression`] against an [`Environment`] and evaluates
//! it for one subject at a time through a [`Runtime`].
//!
//! The crate parses and interprets CEL but neither checks types nor bounds
//! the work of an evaluation, and both matter for rules that run unattended
//! over the whole directory. So compiling here also:
//!
//! - refuses sources over [`MAX_SOURCE_BYTES`], sources whose brackets nest
//!   deeper than [`MAX_DEPTH`] (checked on the text, before the `cel` parser
//!   sees it) and syntax trees deeper than [`MAX_DEPTH`], which keeps
//!   parsing and evaluation off the edge of the stack;
//! - checks every name and type against the attribute schema
//!   ([`check`]), so a typo or a comparison of a number with a string is
//!   refused when the rule is saved, not discovered at 3 a.m.;
//! - rewrites the tree so that each comprehension step and each
//!   concatenation is charged to a per-evaluation budget ([`meter`]), which
//!   turns a pathological rule into an evaluation error instead of a stall.

pub mod check;
mod index;
mod meter;
mod pattern;
pub mod plain;
mod runtime;
mod scan;
mod sized;

use std::collections::BTreeSet;

use cel::common::ast::{Expr, IdedExpr};
use uuid::Uuid;

use crate::directory::{Attribute, SubjectKind};

pub use check::Type;
pub use index::Index;
pub use meter::{DeadlineGuard, LATE, deadline_guard, past_deadline, with_deadline};
pub use runtime::{Bindings, EvalError, Related, Runtime};

/// The longest source accepted, in bytes (see [`crate::limits`]).
pub const MAX_SOURCE_BYTES: usize = crate::limits::MAX_EXPRESSION_BYTES;
/// The deepest syntax tree accepted (see [`crate::limits`]).
pub const MAX_DEPTH: usize = crate::limits::MAX_EXPRESSION_DEPTH;
/// Work units one evaluation may spend: a comprehension step costs the size
/// of its body, a concatenation the size of its result.
pub const BUDGET: u64 = 10_000;

/// The limit an evaluation error reports, if it reports one: `too_costly`
/// when the expression ran out of its work or memory budget, `too_slow` when
/// the work it ran in passed its deadline. Callers that evaluate on a
/// reader's behalf (previews) refuse the request with that code rather than
/// answer with a partial result.
pub fn limit_of(message: &str) -> Option<&'static str> {
    if message.contains(meter::EXHAUSTED) {
        Some("too_costly")
    } else if message.contains(meter::LATE) {
        Some("too_slow")
    } else {
        None
    }
}

/// What an expression may refer to.
pub struct Environment<'a> {
    /// Whose rule it is: `user` or `device` is in scope.
    pub kind: SubjectKind,
    /// Users' attributes.
    pub users: &'a [Attribute],
    /// Devices' attributes.
    pub devices: &'a [Attribute],
    /// Finds a group of `kind` by name (case-insensitive) or id, for
    /// `in_group(...)`.
    pub group: &'a (dyn Fn(&str) -> Option<Uuid> + Sync),
    /// The expression is about a related subject (inside a condition on a
    /// user's devices, say): it sees that subject's attributes only, not its
    /// groups or its own related subjects.
    pub related_only: bool,
}

impl Environment<'_> {
    /// The attributes of `kind`.
    pub fn attributes(&self, kind: SubjectKind) -> &[Attribute] {
        match kind {
            SubjectKind::User => self.users,
            SubjectKind::Device => self.devices,
        }
    }
}

/// A problem with an expression's source, located for the admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// The source line with a caret under the column.
    pub excerpt: String,
    /// `too_long` or `too_deep` when the source passes a limit of
    /// [`crate::limits`], so that callers can answer with that code.
    pub limit: Option<&'static str>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}\n{}",
            self.line, self.column, self.message, self.excerpt
        )
    }
}

impl Problem {
    /// A problem at byte `offset` of `source`.
    pub(crate) fn at(source: &str, offset: usize, message: impl Into<String>) -> Problem {
        let offset = floor_char_boundary(source, offset.min(source.len()));
        let before = &source[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let column = source[line_start..offset].chars().count() + 1;
        let text = source[line_start..]
            .split('\n')
            .next()
            .unwrap_or_default()
            .trim_end_matches('\r');
        let excerpt = format!("{text}\n{}^", " ".repeat(column - 1));
        Problem {
            line,
            column,
            message: message.into(),
            excerpt,
            limit: None,
        }
    }

    /// A problem that is a limit passed, with its code.
    fn limit(mut self, code: &'static str) -> Problem {
        self.limit = Some(code);
        self
    }
}

/// Refuses a source longer than [`MAX_SOURCE_BYTES`] or whose brackets and
/// unary operators nest deeper than [`MAX_DEPTH`], before any parser sees
/// it: the `cel` parser recurses once per level.
pub(crate) fn check_size(source: &str) -> Result<(), Vec<Problem>> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(vec![
            Problem::at(
                source,
                MAX_SOURCE_BYTES,
                format!(
                    "the expression is {} bytes long; the limit is {MAX_SOURCE_BYTES}",
                    source.len()
                ),
            )
            .limit("too_long"),
        ]);
    }
    crate::limits::expression_depth(source, MAX_DEPTH).map_err(|e| {
        vec![
            Problem::at(
                source,
                e.offset,
                format!("the expression nests more than {MAX_DEPTH} levels deep; the limit is {MAX_DEPTH}"),
            )
            .limit("too_deep"),
        ]
    })
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// How the top level of an expression combines its parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// `a && b && …`
    And,
    /// `a || b || …`
    Or,
    /// A single expression.
    Single,
}

/// One operand of the top-level `&&` / `||` chain, for explanations.
#[derive(Clone, Debug)]
pub struct Part {
    /// Its source text.
    pub text: String,
    expr: IdedExpr,
}

/// What an expression reads, so that a change to anything else re-evaluates
/// none of the rules that use it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// Attributes of the subject itself.
    pub own: BTreeSet<String>,
    /// Attributes of its related subjects (`user.devices` / `device.users`).
    pub related: BTreeSet<String>,
    /// Whether it reads the related subjects at all (their number included).
    pub reads_related: bool,
    /// Whether it reads `.groups`, the groups the subject is in.
    pub reads_groups: bool,
    /// Groups named in `in_group(...)`, resolved to ids.
    pub in_groups: BTreeSet<Uuid>,
}

/// A test on a text attribute of the subject that every match passes:
/// `user.department == 'Sales'`, `user.location in ['Denver', 'Boulder']`,
/// `user.email.endsWith('@example.com')`, `user.cost_center.lowerAscii() ==
/// 'cc7'`. A subject whose value passes none of an expression's anchors
/// cannot match it, so evaluating many expressions over many subjects only
/// tries, for each subject, the expressions its values lead to (see
/// [`Index`]): the same idea as the anchor index of the standard conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// The attribute.
    pub attribute: String,
    /// How the value is compared.
    pub test: AnchorTest,
    /// How the value is folded before comparing.
    pub case: Case,
    /// The literals (folded like the value).
    pub values: Vec<String>,
}

/// How an [`Anchor`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnchorTest {
    /// The value is one of the literals.
    Exact,
    /// The value starts with one of them.
    Prefix,
    /// The value ends with one of them.
    Suffix,
}

/// How an [`Anchor`] folds case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Case {
    /// As is.
    Sensitive,
    /// `lowerAscii()`.
    Ascii,
    /// `equalsIgnoreCase`: Unicode lowercase.
    Unicode,
}

impl Case {
    /// `value` folded.
    pub fn fold<'a>(self, value: &'a str) -> std::borrow::Cow<'a, str> {
        match self {
            Case::Sensitive => value.into(),
            Case::Ascii => value.to_ascii_lowercase().into(),
            Case::Unicode => value.to_lowercase().into(),
        }
    }
}

/// A compiled, checked expression.
#[derive(Clone, Debug)]
pub struct Expression {
    source: String,
    kind: SubjectKind,
    expr: IdedExpr,
    reads: Reads,
    chain: Chain,
    parts: Vec<Part>,
    anchors: Option<Vec<Anchor>>,
    /// `in_group` arguments as written → the group.
    named_groups: Vec<(String, Uuid)>,
}

impl Expression {
    /// Compiles `source`, or says everything wrong with it.
    ///
    /// Parsing and checking run on a thread of their own with a large stack:
    /// the parser recurses once per link of an `a + b + …` chain, which the
    /// size limit alone does not keep shallow enough for a request thread.
    pub fn compile(source: &str, env: &Environment<'_>) -> Result<Expression, Vec<Problem>> {
        check_size(source)?;
        if source.trim().is_empty() {
            return Err(vec![Problem::at(source, 0, "the expression is empty")]);
        }
        on_big_stack(|| compile_on_this_thread(source, env))
            .unwrap_or_else(|e| Err(vec![Problem::at(source, 0, e.to_string())]))
    }

    /// The source as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whose rule it is.
    pub fn kind(&self) -> SubjectKind {
        self.kind
    }

    /// What it reads.
    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// How its top level combines [`Expression::parts`].
    pub fn chain(&self) -> Chain {
        self.chain
    }

    /// The operands of its top-level `&&` / `||` chain (one part when there
    /// is no chain).
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The `in_group(...)` arguments as written, with the group each one
    /// resolved to when the expression was compiled.
    pub fn named_groups(&self) -> &[(String, Uuid)] {
        &self.named_groups
    }

    /// Whether the expression names group `id` by its name (rather than its
    /// id) in `in_group(...)`: renaming that group would break it.
    pub fn names_group(&self, id: &Uuid) -> bool {
        self.named_groups
            .iter()
            .any(|(name, g)| g == id && Uuid::parse_str(name).is_err())
    }

    /// Tests of which every match passes at least one, if the expression
    /// has such (see [`Anchor`]). A subject that passes none evaluates to
    /// false, or to a missing-attribute error, which counts as false, so
    /// skipping it changes nothing.
    pub fn anchors(&self) -> Option<&[Anchor]> {
        self.anchors.as_deref()
    }
}

/// The anchors of an expression whose top level is `parts` combined by
/// `chain`: for `&&`, the most selective anchor of any part; for `||`, one
/// per part, each part's own `&&` chain searched the same way, and none if
/// some part has none.
fn find_anchors(chain: Chain, parts: &[&IdedExpr], env: &Environment<'_>) -> Option<Vec<Anchor>> {
    if env.related_only {
        return None;
    }
    match chain {
        Chain::And | Chain::Single => best_anchor(parts, env).map(|a| vec![a]),
        Chain::Or => parts
            .iter()
            .map(|p| {
                let mut conj = Vec::new();
                flatten(p, "_&&_", &mut conj);
                best_anchor(&conj, env)
            })
            .collect(),
    }
}

fn best_anchor(parts: &[&IdedExpr], env: &Environment<'_>) -> Option<Anchor> {
    let rank = |a: &Anchor| (a.test != AnchorTest::Exact, a.values.len());
    parts
        .iter()
        .filter_map(|p| anchor_of(p, env))
        .min_by_key(rank)
}

/// The anchor a single test is, if it is one.
fn anchor_of(e: &IdedExpr, env: &Environment<'_>) -> Option<Anchor> {
    use cel::common::ast::LiteralValue;
    let own = match env.kind {
        SubjectKind::User => "user",
        SubjectKind::Device => "device",
    };
    // `user.<text attribute>`, or its `lowerAscii()`.
    let subject_text = |e: &IdedExpr| -> Option<(String, Case)> {
        let (e, case) = match &e.expr {
            Expr::Call(c) if c.func_name == "lowerAscii" && c.args.is_empty() => {
                (c.target.as_deref()?, Case::Ascii)
            }
            _ => (e, Case::Sensitive),
        };
        let Expr::Select(s) = &e.expr else {
            return None;
        };
        let is_own = matches!(&s.operand.expr, Expr::Ident(n) if n == own);
        let is_text = env
            .attributes(env.kind)
            .iter()
            .any(|a| a.name == s.field && a.attr_type == crate::directory::AttrType::String);
        (is_own && is_text && !s.test).then(|| (s.field.clone(), case))
    };
    let literal = |e: &IdedExpr| match &e.expr {
        Expr::Literal(LiteralValue::String(v)) => Some(v.inner().to_string()),
        _ => None,
    };
    let Expr::Call(c) = &e.expr else {
        return None;
    };
    let anchor = |(attribute, case): (String, Case), test, values: Vec<String>| Anchor {
        attribute,
        test,
        case,
        values: values
            .into_iter()
            .map(|v| case.fold(&v).into_owned())
            .collect(),
    };
    match (c.func_name.as_str(), c.target.as_deref(), c.args.as_slice()) {
        ("_==_", None, [a, b]) => {
            match (subject_text(a), literal(b), subject_text(b), literal(a)) {
                (Some(t), Some(v), ..) | (_, _, Some(t), Some(v)) => {
                    Some(anchor(t, AnchorTest::Exact, vec![v]))
                }
                _ => None,
            }
        }
        ("@in", None, [a, b]) => {
            let t = subject_text(a)?;
            let Expr::List(l) = &b.expr else { return None };
            if l.elements.is_empty() {
                return None;
            }
            let values = l.elements.iter().map(literal).collect::<Option<Vec<_>>>()?;
            Some(anchor(t, AnchorTest::Exact, values))
        }
        ("startsWith" | "endsWith", Some(target), [v]) => {
            let test = if c.func_name == "startsWith" {
                AnchorTest::Prefix
            } else {
                AnchorTest::Suffix
            };
            Some(anchor(subject_text(target)?, test, vec![literal(v)?]))
        }
        ("equalsIgnoreCase", Some(target), [v]) => {
            let (attribute, case) = subject_text(target)?;
            if case != Case::Sensitive {
                return None;
            }
            Some(anchor(
                (attribute, Case::Unicode),
                AnchorTest::Exact,
                vec![literal(v)?],
            ))
        }
        _ => None,
    }
}

/// Why [`on_big_stack`] could not run its work to the end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StackError {
    /// No thread could be started (the process is out of threads or memory).
    #[error("cannot compile now: {0}")]
    Spawn(std::io::Error),
    /// The work panicked.
    #[error("the expression could not be compiled")]
    Panicked,
}

/// Runs `f` on a thread with a large stack. Parsing, checking and dropping
/// a syntax tree recurse once per link of an `a + b + …` chain, which the
/// size limit alone does not keep shallow enough for a request thread.
pub(crate) fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, StackError> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cohort-cel".into())
            .stack_size(64 * 1024 * 1024)
            .spawn_scoped(scope, f)
            .map_err(StackError::Spawn)?
            .join()
            .map_err(|_| StackError::Panicked)
    })
}

/// Parses `source` and refuses trees deeper than [`MAX_DEPTH`]. Call on a
/// thread from [`on_big_stack`].
pub(crate) fn parse(source: &str) -> Result<runtime::Parsed, Vec<Problem>> {
    check_size(source)?;
    let (expr, info) = runtime::parse(source).map_err(|errors| {
        errors
            .into_iter()
            .map(|(line, column, message)| {
                let offset = line_column_offset(source, line, column);
                Problem::at(source, offset, message)
            })
            .collect::<Vec<_>>()
    })?;
    if let Some(deep) = too_deep(&expr) {
        let offset = info.offset_for(deep).map_or(0, |(start, _)| start as usize);
        return Err(vec![
            Problem::at(
                source,
                offset,
                format!("the expression nests more than {MAX_DEPTH} levels deep; the limit is {MAX_DEPTH}"),
            )
            .limit("too_deep"),
        ]);
    }
    Ok((expr, info))
}

fn compile_on_this_thread(source: &str, env: &Environment<'_>) -> Result<Expression, Vec<Problem>> {
    let (expr, info) = parse(source)?;
    let offset_of = |id: u64| info.offset_for(id).map_or(0, |(start, _)| start as usize);
    let checked = check::check(&expr, env, source, &offset_of, true)?;
    let chain_parts = |op: &str| {
        let mut parts = Vec::new();
        flatten(&expr, op, &mut parts);
        parts
    };
    let (chain, parts) = match &expr.expr {
        Expr::Call(c) if c.func_name == "_&&_" => (Chain::And, chain_parts("_&&_")),
        Expr::Call(c) if c.func_name == "_||_" => (Chain::Or, chain_parts("_||_")),
        _ => (Chain::Single, vec![&expr]),
    };
    let anchors = find_anchors(chain, &parts, env);
    let spans = span_ends(&info, source);
    let parts = parts
        .into_iter()
        .map(|p| {
            let (start, end) = spans(p);
            Part {
                text: source[start..end].trim().to_string(),
                expr: meter::instrument(p.clone(), &checked.groups),
            }
        })
        .collect();
    Ok(Expression {
        source: source.to_string(),
        kind: env.kind,
        expr: meter::instrument(expr, &checked.groups),
        reads: checked.reads,
        chain,
        parts,
        anchors,
        named_groups: checked.groups.into_iter().collect(),
    })
}

/// The byte offset of a 1-based line and column (in characters).
fn line_column_offset(source: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, text) in source.split('\n').enumerate() {
        if i + 1 == line {
            return offset
                + text
                    .char_indices()
                    .nth(column.saturating_sub(1))
                    .map_or(text.len(), |(b, _)| b);
        }
        offset += text.len() + 1;
    }
    source.len()
}

/// Some node deeper than [`MAX_DEPTH`], if any. Iterative: the tree may be
/// deep enough to be the problem.
fn too_deep(root: &IdedExpr) -> Option<u64> {
    let mut stack = vec![(root, 1usize)];
    while let Some((e, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Some(e.id);
        }
        for child in children(e) {
            stack.push((child, depth + 1));
        }
    }
    None
}

/// The direct children of a node.
pub(crate) fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    use cel::common::ast::EntryExpr;
    match &e.expr {
        Expr::Call(c) => c.target.iter().map(|t| &**t).chain(&c.args).collect(),
        Expr::Select(s) => vec![&s.operand],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => m
            .entries
            .iter()
            .flat_map(|en| match &en.expr {
                EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                EntryExpr::StructField(sf) => vec![&sf.value],
            })
            .collect(),
        Expr::Struct(s) => s
            .entries
            .iter()
            .flat_map(|en| match &en.expr {
                EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                EntryExpr::StructField(sf) => vec![&sf.value],
            })
            .collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

fn flatten<'a>(e: &'a IdedExpr, op: &str, out: &mut Vec<&'a IdedExpr>) {
    if let Expr::Call(c) = &e.expr
        && c.func_name == op
        && c.target.is_none()
        && c.args.len() == 2
    {
        flatten(&c.args[0], op, out);
        flatten(&c.args[1], op, out);
        return;
    }
    out.push(e);
}

/// The source span of a subtree. Nodes carry the offset of one token each
/// (a field selection its `.`, a call its `(`), so the span is widened over
/// field names, function names and brackets left open.
fn span_ends<'a>(
    info: &'a cel::common::ast::SourceInfo,
    source: &'a str,
) -> impl Fn(&IdedExpr) -> (usize, usize) + 'a {
    move |e: &IdedExpr| {
        let mut lo = usize::MAX;
        let mut hi = 0usize;
        let mut stack = vec![e];
        while let Some(n) = stack.pop() {
            if let Some((start, stop)) = info.offset_for(n.id) {
                let (start, stop) = (start as usize, stop as usize);
                lo = lo.min(start);
                hi = hi.max(stop + char_len_at(source, stop));
                match &n.expr {
                    Expr::Select(sel) => hi = hi.max(start + 1 + sel.field.len()),
                    Expr::Call(c)
                        if c.target.is_none()
                            && !c.func_name.starts_with(['_', '@', '!', '-'])
                            && start >= c.func_name.len()
                            && source.get(start - c.func_name.len()..start)
                                == Some(c.func_name.as_str()) =>
                    {
                        lo = lo.min(start - c.func_name.len());
                    }
                    _ => {}
                }
            }
            stack.extend(children(n));
        }
        if lo == usize::MAX {
            return (0, source.len());
        }
        let lo = floor_char_boundary(source, lo.min(source.len()));
        let hi = floor_char_boundary(source, hi.min(source.len()));
        (lo, balance(source, lo, hi))
    }
}

fn char_len_at(source: &str, at: usize) -> usize {
    source
        .get(at..)
        .and_then(|s| s.chars().next())
        .map_or(1, char::len_utf8)
}

/// Extends `source[start..end]` over the brackets it opens but does not
/// close (a call's arguments, a list literal), so a part reads as written.
fn balance(source: &str, start: usize, end: usize) -> usize {
    let mut depth: i32 = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut idx = start;
    for (i, c) in source[start..].char_indices() {
        let at = start + i;
        if at >= end && depth <= 0 {
            return idx.max(end);
        }
        match quote {
            Some(q) => {
                if c == q && !escaped {
                    quote = None;
                }
                escaped = c == '\\' && !escaped;
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                _ => {}
            },
        }
        idx = at + c.len_utf8();
    }
    idx
}

/// The closest of `candidates` to `name`, if close enough to be a likely
/// typo.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .map(|c| (edit_distance(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod scan_tests;
#[cfg(test)]
pub(crate) mod tests;
