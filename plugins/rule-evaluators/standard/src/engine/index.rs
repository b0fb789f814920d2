//! The anchor index: from a subject's text values, the rules it may match,
//! so that a batch is not tested against every rule. It only has to never
//! miss a rule; the candidates are then tested in full.

use std::collections::HashMap;

use cohort_sdk::rules::BatchView;

use super::{Condition, Operand, Operator, Rule};

/// Finds the rules a subject may match from the subject's text values.
///
/// A rule is *anchored* when each of its blocks has an anchor: a positive
/// `equals` / `in` / `starts_with` / `ends_with` condition on a text or
/// text-list attribute (see [`Condition::anchor_kind`]). Such a condition
/// holds only if one of the subject's values for the attribute (lowercased,
/// with `ignore_case`) equals, starts with or ends with one of the
/// condition's values, so a subject can match an anchored rule only if one
/// of its values leads to the rule here. Those candidates are then tested
/// in full, so the index only has to never miss a rule; it may offer too
/// many.
#[derive(Debug, Default)]
pub(super) struct AnchorIndex {
    pub(super) groups: Vec<AnchorGroup>,
    /// The rules that are not anchored, tested against every subject.
    pub(super) unanchored: Vec<usize>,
}

/// How an anchor compares a subject's value with its operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AnchorKind {
    /// `equals` / `in`: the value is an operand.
    Exact,
    /// `starts_with`: the value starts with an operand.
    Prefix,
    /// `ends_with`: the value ends with an operand.
    Suffix,
}

/// The anchors on one attribute with one `ignore_case` setting.
#[derive(Debug)]
pub(super) struct AnchorGroup {
    pub(super) attribute: String,
    pub(super) ignore_case: bool,
    /// An exact anchor's value (lowercased with `ignore_case`, as the
    /// condition's operands are) → the rules with an anchor listing it,
    /// ascending and each once.
    pub(super) exact: HashMap<String, Vec<usize>>,
    pub(super) prefixes: Affixes,
    pub(super) suffixes: Affixes,
}

/// The operands of the prefix (or suffix) anchors of one [`AnchorGroup`].
#[derive(Debug, Default)]
pub(super) struct Affixes {
    /// An operand (lowercased with `ignore_case`) → the rules with an
    /// anchor listing it, ascending and each once.
    pub(super) rules: HashMap<String, Vec<usize>>,
    /// The distinct byte lengths of the keys of `rules`, ascending. A value
    /// is looked up by its prefix (suffix) of each of these lengths.
    pub(super) lengths: Vec<usize>,
}

impl AnchorIndex {
    pub(super) fn build(rules: &[Rule]) -> AnchorIndex {
        let mut index = AnchorIndex::default();
        let mut group_of: HashMap<(&str, bool), usize> = HashMap::new();
        for (r, rule) in rules.iter().enumerate() {
            let Some(anchors) = rule.anchors() else {
                index.unanchored.push(r);
                continue;
            };
            for (anchor, kind) in anchors {
                let g = *group_of
                    .entry((&anchor.attribute, anchor.ignore_case))
                    .or_insert_with(|| {
                        index.groups.push(AnchorGroup {
                            attribute: anchor.attribute.clone(),
                            ignore_case: anchor.ignore_case,
                            exact: HashMap::new(),
                            prefixes: Affixes::default(),
                            suffixes: Affixes::default(),
                        });
                        index.groups.len() - 1
                    });
                index.groups[g].add(r, anchor, kind);
            }
        }
        index
    }

    /// The groups whose attribute some subject of `batch` has, with the
    /// attribute's index in the batch.
    pub(super) fn resolve(&self, batch: &BatchView<'_>) -> Vec<(&AnchorGroup, u32)> {
        self.groups
            .iter()
            .filter_map(|g| Some((g, batch.attribute_index(&g.attribute)?)))
            .collect()
    }
}

/// Record rule `r` under `key`. Rules are added in ascending order, so a
/// rule already listed for a key is the last one in its list.
fn push_rule(map: &mut HashMap<String, Vec<usize>>, key: &str, r: usize) {
    let rules = map.entry(key.to_owned()).or_default();
    if rules.last() != Some(&r) {
        rules.push(r);
    }
}

impl AnchorGroup {
    /// Record that rule `r` is a candidate for the values `anchor` lets
    /// through.
    fn add(&mut self, r: usize, anchor: &Condition, kind: AnchorKind) {
        for value in anchor.texts() {
            match kind {
                AnchorKind::Exact => push_rule(&mut self.exact, value, r),
                AnchorKind::Prefix => self.prefixes.add(r, value),
                AnchorKind::Suffix => self.suffixes.add(r, value),
            }
        }
    }

    /// Offer `candidates` the rules whose anchor on this attribute holds for
    /// the subject value `text`, and perhaps others. `key` is scratch space
    /// for lowercasing.
    pub(super) fn offer(&self, text: &str, key: &mut String, candidates: &mut Candidates) {
        let text = if self.ignore_case {
            lowercase_into(text, key);
            key.as_str()
        } else {
            text
        };
        if let Some(rules) = self.exact.get(text) {
            candidates.add(rules);
        }
        self.prefixes.offer(text, |len| text.get(..len), candidates);
        self.suffixes
            .offer(text, |len| text.get(text.len() - len..), candidates);
    }
}

impl Affixes {
    fn add(&mut self, r: usize, affix: &str) {
        push_rule(&mut self.rules, affix, r);
        if let Err(i) = self.lengths.binary_search(&affix.len()) {
            self.lengths.insert(i, affix.len());
        }
    }

    /// Offer the rules of the operands that `text` starts (or ends) with.
    /// `cut(len)` is the prefix (or suffix) of `text` of `len` bytes, `None`
    /// when `len` bytes end (or start) inside a character: then no operand,
    /// which is whole characters, can match there. The length 0 gives the
    /// empty string, so an empty operand is offered for every value.
    fn offer<'t>(
        &self,
        text: &'t str,
        cut: impl Fn(usize) -> Option<&'t str>,
        candidates: &mut Candidates,
    ) {
        for &len in &self.lengths {
            if len > text.len() {
                break;
            }
            if let Some(rules) = cut(len).and_then(|affix| self.rules.get(affix)) {
                candidates.add(rules);
            }
        }
    }
}

/// `text.to_lowercase()` into `out`, without allocating for ASCII text.
///
/// With `ignore_case`, the anchor index looks values up by this key, and it
/// finds every rule whose anchor holds:
///
/// - An `equals` / `in` condition ([`text_eq`], [`Condition::test_text`])
///   holds for a value exactly when the value's lowercase equals one of its
///   operands, which were lowercased the same way when compiled.
/// - A `starts_with` (`ends_with`) condition holds exactly when the value's
///   lowercase starts (ends) with one of its operands. For a non-ASCII value,
///   `test_text` lowercases the whole value first, as here, and then cuts it
///   at the operand's length in bytes, so lowercasing changing byte lengths
///   does not matter: both sides cut the same lowercased string. The cut
///   piece is compared with `text_eq`, which for non-ASCII may lowercase it
///   again (changing nothing, see below). For an ASCII value, `test_text`
///   cuts the value unlowered and compares with `eq_ignore_ascii_case`,
///   which is the same as cutting the ASCII-lowercased value here and
///   comparing exactly, since an operand (lowercased) holds no ASCII
///   capitals.
///
/// Both rest on lowercasing twice being lowercasing once, for every
/// character (the test `lowercasing_is_idempotent`); the test
/// `affix_anchors_offer_exactly_the_rules_whose_anchor_holds` checks the
/// prefix and suffix lookups against `test_text` on awkward values.
pub(super) fn lowercase_into(text: &str, out: &mut String) {
    out.clear();
    if text.is_ascii() {
        out.push_str(text);
        out.make_ascii_lowercase();
    } else {
        out.push_str(&text.to_lowercase());
    }
}

/// The rules the anchor index offers for one subject, each once.
pub(super) struct Candidates {
    /// `seen[r] == generation` when rule `r` is in `rules`, so clearing is
    /// O(1) rather than O(rules) per subject.
    seen: Vec<u32>,
    generation: u32,
    rules: Vec<usize>,
}

impl Candidates {
    pub(super) fn new(rules: usize) -> Candidates {
        Candidates {
            seen: vec![0; rules],
            generation: 0,
            rules: Vec::new(),
        }
    }

    /// Forget the previous subject's candidates.
    pub(super) fn clear(&mut self) {
        self.rules.clear();
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped around: an old mark could now look current.
            self.seen.fill(0);
            self.generation = 1;
        }
    }

    /// Add `rules`, skipping those already added.
    pub(super) fn add(&mut self, rules: &[usize]) {
        for &r in rules {
            if self.seen[r] != self.generation {
                self.seen[r] = self.generation;
                self.rules.push(r);
            }
        }
    }

    pub(super) fn rules(&self) -> &[usize] {
        &self.rules
    }
}

impl Rule {
    /// One anchor per block, or `None` if some block has none: then a
    /// subject may satisfy that block whatever its values are, and the rule
    /// has to be tested against every subject.
    ///
    /// A block's anchor is, by preference: an exact (`equals` / `in`)
    /// condition rather than a `starts_with` / `ends_with` one, which lets
    /// through every value sharing the prefix or suffix; then one without
    /// an empty prefix or suffix, which would let through every value; then
    /// the one with the fewest values. Each step means fewer subjects for
    /// which the rule is a candidate only to fail on another condition.
    pub(super) fn anchors(&self) -> Option<Vec<(&Condition, AnchorKind)>> {
        self.blocks
            .iter()
            .map(|block| {
                block
                    .iter()
                    .filter_map(|c| Some((c, c.anchor_kind()?)))
                    .min_by_key(|(c, kind)| {
                        let matches_every_value =
                            *kind != AnchorKind::Exact && c.texts().any(str::is_empty);
                        (
                            *kind != AnchorKind::Exact,
                            matches_every_value,
                            c.operands.len(),
                        )
                    })
            })
            .collect()
    }
}

impl Condition {
    /// How this condition can anchor its block in the [`AnchorIndex`], if
    /// it can: a positive `equals` / `in` / `starts_with` / `ends_with` on
    /// text, which holds only for a subject with a text value that equals,
    /// starts with or ends with one of [`Condition::texts`] (after
    /// lowercasing with `ignore_case`; see [`lowercase_into`]). Operands are
    /// text exactly when the attribute is a text or text-list attribute.
    pub(super) fn anchor_kind(&self) -> Option<AnchorKind> {
        let kind = match self.operator {
            Operator::Equals | Operator::In => AnchorKind::Exact,
            Operator::StartsWith => AnchorKind::Prefix,
            Operator::EndsWith => AnchorKind::Suffix,
            _ => return None,
        };
        (self.regex.is_none()
            && !self.operands.is_empty()
            && self.operands.iter().all(|o| matches!(o, Operand::Text(_))))
        .then_some(kind)
    }

    /// The text operands, lowercased if `ignore_case`.
    pub(super) fn texts(&self) -> impl Iterator<Item = &str> {
        self.operands.iter().filter_map(|o| match o {
            Operand::Text(s) => Some(s.as_str()),
            _ => None,
        })
    }
}
