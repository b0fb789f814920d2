//! Finding the expressions a subject may match from its values.
//!
//! Built from the [`Anchor`]s of many expressions. For a subject, it offers
//! every expression one of whose anchors the subject's value passes, and
//! every expression without anchors. It may offer too many (the expression
//! is then evaluated and says no), never too few.

use std::collections::HashMap;

use super::{Anchor, AnchorTest, Case, Expression, Related};
use crate::directory::AttrRef;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Index {
    /// Expressions tried on every subject.
    always: Vec<usize>,
    /// `(attribute, case)` → the literals of its anchors.
    keys: HashMap<(String, Case), Literals>,
}

#[derive(Debug, Default)]
struct Literals {
    exact: HashMap<String, Vec<usize>>,
    prefixes: Affixes,
    suffixes: Affixes,
}

#[derive(Debug, Default)]
struct Affixes {
    by_value: HashMap<String, Vec<usize>>,
    /// The distinct byte lengths of the keys, ascending.
    lengths: Vec<usize>,
}

impl Affixes {
    fn add(&mut self, value: &str, n: usize) {
        self.by_value.entry(value.to_string()).or_default().push(n);
        if let Err(i) = self.lengths.binary_search(&value.len()) {
            self.lengths.insert(i, value.len());
        }
    }

    fn offer(&self, value: &str, suffix: bool, out: &mut Vec<usize>) {
        for &len in &self.lengths {
            if len > value.len() {
                break;
            }
            let cut = if suffix {
                value.get(value.len() - len..)
            } else {
                value.get(..len)
            };
            if let Some(ns) = cut.and_then(|c| self.by_value.get(c)) {
                out.extend_from_slice(ns);
            }
        }
    }
}

impl Index {
    /// Indexes `expressions` by number. With `anchored` false, every
    /// expression is offered to every subject (explanations want them all).
    pub fn new<'a>(
        expressions: impl IntoIterator<Item = (usize, &'a Expression)>,
        anchored: bool,
    ) -> Index {
        let mut index = Index::default();
        for (n, e) in expressions {
            match e.anchors().filter(|_| anchored) {
                None => index.always.push(n),
                Some(anchors) => {
                    for a in anchors {
                        index.add(a, n);
                    }
                }
            }
        }
        index
    }

    fn add(&mut self, a: &Anchor, n: usize) {
        let literals = self.keys.entry((a.attribute.clone(), a.case)).or_default();
        for v in &a.values {
            match a.test {
                AnchorTest::Exact => literals.exact.entry(v.clone()).or_default().push(n),
                AnchorTest::Prefix => literals.prefixes.add(v, n),
                AnchorTest::Suffix => literals.suffixes.add(v, n),
            }
        }
    }

    /// The expressions `subject` may match, ascending, each once, into `out`.
    pub fn candidates(&self, subject: &dyn Related, out: &mut Vec<usize>) {
        out.clear();
        out.extend_from_slice(&self.always);
        for ((attribute, case), literals) in &self.keys {
            let Some(AttrRef::Text(value)) = subject.attribute(attribute) else {
                continue;
            };
            let value = case.fold(value);
            if let Some(ns) = literals.exact.get(value.as_ref()) {
                out.extend_from_slice(ns);
            }
            literals.prefixes.offer(&value, false, out);
            literals.suffixes.offer(&value, true, out);
        }
        out.sort_unstable();
        out.dedup();
    }
}
