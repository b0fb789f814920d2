//! Rule evaluators: the `rule-evaluator` world.
//!
//! Implement [`RuleEvaluator`] and register it with
//! [`export_rule_evaluator!`](crate::export_rule_evaluator). The host compiles
//! rules once and then sends batches of subjects; [`BatchView`] reads a batch
//! without copying, and [`Matches`] builds the result bitmap.

use std::marker::PhantomData;

use crate::bindings::rule_evaluator::exports::cohort::plugin::rules as wit;
pub use crate::bindings::rule_evaluator::exports::cohort::plugin::rules::{
    Cell, CellValue, CompileError, ConditionOutcome, EvaluateError, EvaluateOptions, Evaluation,
    EvaluatorInfo, RuleProblem, RuleSource, Span, SubjectBatch, SubjectError,
};
use crate::{AttributeDef, SubjectKind};

/// A rule evaluator. The SDK turns it into the component's exports.
pub trait RuleEvaluator: 'static {
    /// The compiled form of a set of rules, kept by the host between batches.
    type Rules: 'static;

    /// Describe the evaluator to admins.
    fn describe() -> EvaluatorInfo;

    /// Check and compile `rules` about subjects of `kind`. Report every
    /// problem found, each with its rule index and position.
    fn compile(
        kind: SubjectKind,
        schema: &[AttributeDef],
        rules: &[RuleSource],
    ) -> Result<Self::Rules, CompileError>;

    /// How many rules `rules` holds.
    fn len(rules: &Self::Rules) -> u32;

    /// Evaluate every rule against every subject in `batch`.
    fn evaluate(
        rules: &Self::Rules,
        batch: &BatchView<'_>,
        options: &EvaluateOptions,
    ) -> Result<Evaluation, EvaluateError>;
}

/// Glue between a [`RuleEvaluator`] and the generated bindings. Used by
/// [`export_rule_evaluator!`](crate::export_rule_evaluator); not called directly.
#[doc(hidden)]
pub struct Adapter<T>(PhantomData<T>);

/// The rule-set resource a [`RuleEvaluator`]'s compiled rules live in.
#[doc(hidden)]
pub struct RuleSetAdapter<T: RuleEvaluator>(T::Rules);

impl<T: RuleEvaluator> wit::Guest for Adapter<T> {
    type RuleSet = RuleSetAdapter<T>;

    fn describe() -> EvaluatorInfo {
        T::describe()
    }

    fn compile(
        kind: SubjectKind,
        schema: Vec<AttributeDef>,
        rules: Vec<RuleSource>,
    ) -> Result<wit::RuleSet, CompileError> {
        T::compile(kind, &schema, &rules).map(|r| wit::RuleSet::new(RuleSetAdapter::<T>(r)))
    }
}

impl<T: RuleEvaluator> wit::GuestRuleSet for RuleSetAdapter<T> {
    fn len(&self) -> u32 {
        T::len(&self.0)
    }

    fn evaluate(
        &self,
        batch: SubjectBatch,
        options: EvaluateOptions,
    ) -> Result<Evaluation, EvaluateError> {
        let view = BatchView::new(&batch)?;
        T::evaluate(&self.0, &view, &options)
    }
}

/// Register `$ty` (a [`RuleEvaluator`]) as the component's rule evaluator.
#[macro_export]
macro_rules! export_rule_evaluator {
    ($ty:ty) => {
        // Exports exist only in the WebAssembly build; a native build (unit
        // tests, benchmarks) links the plugin as an ordinary library.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __CohortRuleEvaluator = $crate::rules::Adapter<$ty>;
            $crate::bindings::rule_evaluator::__export_rule_evaluator!(
                __CohortRuleEvaluator with_types_in $crate::bindings::rule_evaluator
            );
        };
    };
}

/// A checked, borrowed view of a [`SubjectBatch`].
///
/// Construction validates offsets and spans once, so the accessors never
/// fail and never panic on a malformed batch.
pub struct BatchView<'a> {
    batch: &'a SubjectBatch,
}

impl<'a> BatchView<'a> {
    /// Check `batch` and wrap it.
    pub fn new(batch: &'a SubjectBatch) -> Result<Self, EvaluateError> {
        let offsets = &batch.row_offsets;
        if offsets.is_empty() {
            return Err(EvaluateError::InvalidBatch(
                "row-offsets must have subject-count + 1 entries".into(),
            ));
        }
        if offsets[0] != 0 || *offsets.last().unwrap_or(&0) as usize != batch.cells.len() {
            return Err(EvaluateError::InvalidBatch(
                "row-offsets must start at 0 and end at the number of cells".into(),
            ));
        }
        if offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err(EvaluateError::InvalidBatch(
                "row-offsets must not decrease".into(),
            ));
        }
        let attributes = batch.attributes.len() as u32;
        for (i, cell) in batch.cells.iter().enumerate() {
            if cell.attribute >= attributes {
                return Err(EvaluateError::InvalidBatch(format!(
                    "cell {i} refers to attribute {} of {attributes}",
                    cell.attribute
                )));
            }
            if let CellValue::Text(span) = cell.value {
                let end = span.offset as usize + span.len as usize;
                if batch.text.get(span.offset as usize..end).is_none() {
                    return Err(EvaluateError::InvalidBatch(format!(
                        "cell {i} has a text span outside the text arena or inside a character"
                    )));
                }
            }
        }
        Ok(BatchView { batch })
    }

    /// The subjects' kind.
    pub fn kind(&self) -> SubjectKind {
        self.batch.kind
    }

    /// The number of subjects.
    pub fn len(&self) -> usize {
        self.batch.row_offsets.len() - 1
    }

    /// Whether the batch has no subjects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The attribute names, indexed by [`Cell::attribute`].
    pub fn attributes(&self) -> &'a [String] {
        &self.batch.attributes
    }

    /// The index of attribute `name` in this batch, if any subject has it.
    pub fn attribute_index(&self, name: &str) -> Option<u32> {
        self.batch
            .attributes
            .iter()
            .position(|a| a == name)
            .map(|i| i as u32)
    }

    /// Subject `i`. Panics if `i >= len()`.
    pub fn subject(&self, i: usize) -> SubjectView<'a> {
        let start = self.batch.row_offsets[i] as usize;
        let end = self.batch.row_offsets[i + 1] as usize;
        SubjectView {
            cells: &self.batch.cells[start..end],
            text: &self.batch.text,
        }
    }
}

/// One subject of a batch.
#[derive(Clone, Copy)]
pub struct SubjectView<'a> {
    cells: &'a [Cell],
    text: &'a str,
}

/// A value read from a batch, with text borrowed from the arena.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// Text.
    Text(&'a str),
    /// A number.
    Number(f64),
    /// A boolean.
    Boolean(bool),
    /// Milliseconds since the Unix epoch (UTC).
    Timestamp(i64),
}

impl<'a> SubjectView<'a> {
    /// The values of attribute `attribute` (an index from
    /// [`BatchView::attribute_index`]). Empty when the subject lacks it; more
    /// than one for a text list.
    pub fn values(&self, attribute: u32) -> impl Iterator<Item = ValueRef<'a>> + 'a {
        // Cells are sorted by attribute, so find the run by binary search.
        let start = self.cells.partition_point(|c| c.attribute < attribute);
        let cells = &self.cells[start..];
        let text = self.text;
        cells
            .iter()
            .take_while(move |c| c.attribute == attribute)
            .map(move |c| match c.value {
                CellValue::Text(span) => {
                    let start = span.offset as usize;
                    ValueRef::Text(&text[start..start + span.len as usize])
                }
                CellValue::Number(n) => ValueRef::Number(n),
                CellValue::Boolean(b) => ValueRef::Boolean(b),
                CellValue::Timestamp(t) => ValueRef::Timestamp(t),
            })
    }

    /// Whether the subject has attribute `attribute` at all.
    pub fn has(&self, attribute: u32) -> bool {
        self.values(attribute).next().is_some()
    }
}

/// The match bitmap of an [`Evaluation`], built one bit at a time.
pub struct Matches {
    words: Vec<u64>,
    words_per_rule: u32,
}

impl Matches {
    /// An all-zero bitmap for `rules` rules over `subjects` subjects.
    pub fn new(rules: usize, subjects: usize) -> Self {
        let words_per_rule = subjects.div_ceil(64);
        Matches {
            words: vec![0; rules * words_per_rule],
            words_per_rule: words_per_rule as u32,
        }
    }

    /// Mark `subject` as matching `rule`.
    pub fn set(&mut self, rule: usize, subject: usize) {
        let w = rule * self.words_per_rule as usize + subject / 64;
        self.words[w] |= 1 << (subject % 64);
    }

    /// Whether `subject` matches `rule`.
    pub fn get(&self, rule: usize, subject: usize) -> bool {
        let w = rule * self.words_per_rule as usize + subject / 64;
        self.words[w] & (1 << (subject % 64)) != 0
    }

    /// Finish into an [`Evaluation`] with no explanations or errors.
    pub fn into_evaluation(self) -> Evaluation {
        Evaluation {
            matches: self.words,
            words_per_rule: self.words_per_rule,
            explanations: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Read the bitmap of a finished [`Evaluation`].
    pub fn from_evaluation(evaluation: &Evaluation) -> Self {
        Matches {
            words: evaluation.matches.clone(),
            words_per_rule: evaluation.words_per_rule,
        }
    }
}

/// Builds a [`SubjectBatch`], for tests and benchmarks of an evaluator.
pub struct BatchBuilder {
    batch: SubjectBatch,
    row: Vec<Cell>,
}

/// One value for [`BatchBuilder::push`].
#[derive(Debug, Clone)]
pub enum Input<'a> {
    /// Text.
    Text(&'a str),
    /// A list of texts.
    List(&'a [&'a str]),
    /// A number.
    Number(f64),
    /// A boolean.
    Boolean(bool),
    /// Milliseconds since the Unix epoch (UTC).
    Timestamp(i64),
}

impl BatchBuilder {
    /// An empty batch of `kind` subjects.
    pub fn new(kind: SubjectKind) -> Self {
        BatchBuilder {
            batch: SubjectBatch {
                kind,
                attributes: Vec::new(),
                text: String::new(),
                row_offsets: vec![0],
                cells: Vec::new(),
            },
            row: Vec::new(),
        }
    }

    fn attribute(&mut self, name: &str) -> u32 {
        match self.batch.attributes.iter().position(|a| a == name) {
            Some(i) => i as u32,
            None => {
                self.batch.attributes.push(name.to_owned());
                (self.batch.attributes.len() - 1) as u32
            }
        }
    }

    fn text(&mut self, s: &str) -> CellValue {
        let offset = self.batch.text.len() as u32;
        self.batch.text.push_str(s);
        CellValue::Text(Span {
            offset,
            len: s.len() as u32,
        })
    }

    /// Add one subject with the given attributes.
    pub fn push(&mut self, attributes: &[(&str, Input<'_>)]) -> &mut Self {
        self.row.clear();
        for (name, value) in attributes {
            let attribute = self.attribute(name);
            match value {
                Input::Text(s) => {
                    let value = self.text(s);
                    self.row.push(Cell { attribute, value });
                }
                Input::List(items) => {
                    for s in *items {
                        let value = self.text(s);
                        self.row.push(Cell { attribute, value });
                    }
                }
                Input::Number(n) => self.row.push(Cell {
                    attribute,
                    value: CellValue::Number(*n),
                }),
                Input::Boolean(b) => self.row.push(Cell {
                    attribute,
                    value: CellValue::Boolean(*b),
                }),
                Input::Timestamp(t) => self.row.push(Cell {
                    attribute,
                    value: CellValue::Timestamp(*t),
                }),
            }
        }
        self.row.sort_by_key(|c| c.attribute);
        self.batch.cells.append(&mut self.row);
        self.batch.row_offsets.push(self.batch.cells.len() as u32);
        self
    }

    /// The finished batch.
    pub fn build(self) -> SubjectBatch {
        self.batch
    }
}
