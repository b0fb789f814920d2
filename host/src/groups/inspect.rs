//! Looking without writing: previewing an unsaved rule over the whole
//! directory, and explaining one subject's membership condition by
//! condition. Both run the same plan and evaluator as the real thing, so what
//! they say is what a save would do.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Groups;
use super::crud::{build, load};
use super::explanation::{
    ConditionExplanation, Explanation, ExpressionExplanation, ExpressionPart, GroupRef,
    RelatedExplanation, RelatedSubject, RuleExplanation, StateCheck,
};
use super::layout::{EXEMPTIONS, MANUAL, MEMBERS, SUGGESTIONS, pair};
use super::model::{
    ErrorExample, Exemption, ExemptionKind, Group, GroupInput, GroupType, Membership, Suggestion,
};
use super::plan::{self, Parsed, Unit};
use super::replica::Snapshot;
use super::rule::{Cond, Quantifier, RuleModel, Warning};
use super::run::{Explained, Mode, PartValues, Run};
use super::universe::Universe;
use crate::auth::Read;
use crate::directory::{SubjectKind, UserState};
use crate::error::DomainError;
use crate::expression::{Chain, Expression};
use crate::plugins::PluginError;
use cohort_storage::Reader;

/// Ids listed per list in a preview unless asked otherwise.
const DEFAULT_PREVIEW_IDS: usize = 100;
/// The most ids a preview lists per list.
const MAX_PREVIEW_IDS: usize = 10_000;

/// An unsaved rule to try.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewInput {
    /// `user` or `device`.
    pub subject: SubjectKind,
    /// The rule, as in a group.
    #[schema(value_type = Object)]
    pub rule: Value,
    /// An exclusion rule.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub exclusion: Option<Value>,
    /// Rule-evaluator plugin; `rules-standard` by default.
    #[serde(default)]
    pub evaluator: Option<String>,
    /// For user groups: states admitted (default `active`).
    #[serde(default)]
    pub member_states: Option<Vec<UserState>>,
    /// An existing group to compare with: the diff is against its members,
    /// and its exemptions and manual members apply.
    #[serde(default)]
    pub group_id: Option<Uuid>,
    /// How many ids to list per list (default 100, at most 10,000); counts
    /// are always complete.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Ids with their full count.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IdList {
    /// How many there are.
    pub count: u64,
    /// The first of them, by id.
    pub subject_ids: Vec<Uuid>,
    /// More exist than are listed.
    pub truncated: bool,
}

impl IdList {
    fn of(ids: &BTreeSet<Uuid>, limit: usize) -> IdList {
        IdList {
            count: ids.len() as u64,
            subject_ids: ids.iter().take(limit).copied().collect(),
            truncated: ids.len() > limit,
        }
    }
}

/// What a rule would do.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Preview {
    /// The members the rule would give.
    pub members: IdList,
    /// Subjects that would join (compared with `group_id`'s members).
    pub added: IdList,
    /// Members that would leave.
    pub removed: IdList,
    /// Findings about the rule.
    pub warnings: Vec<Warning>,
    /// Subjects the evaluator could not evaluate (not members).
    pub evaluation_errors: u64,
    /// The first few of those.
    pub error_examples: Vec<ErrorExample>,
    /// The evaluation time relative dates were resolved against.
    pub evaluated_at: DateTime<Utc>,
    /// How long the evaluation took.
    pub elapsed_ms: u64,
}

/// How long a preview or explanation may evaluate.
const INSPECT_DEADLINE: std::time::Duration = crate::limits::INSPECT_DEADLINE;

/// The refusal for an evaluation error that reports a limit
/// (`too_costly`, `too_slow`), naming the expression's field.
fn refusal(message: &str) -> Option<DomainError> {
    let code = crate::expression::limit_of(message)?;
    let (field, detail) = message.split_once(": ").unwrap_or(("rule", message));
    Some(DomainError::Limit {
        code,
        field: field.to_string(),
        message: detail.to_string(),
    })
}

fn failure(group: &Group, message: String) -> DomainError {
    DomainError::Plugin(PluginError::Trap {
        plugin: group.evaluator.clone(),
        message,
    })
}

impl Groups {
    /// Evaluates an unsaved rule over the whole directory. Nothing is
    /// written. Waits for a preview permit (see `Inner::previews`), which
    /// goes with the evaluation, so a caller that hangs up frees it only
    /// when the work it started is done.
    pub async fn preview(&self, _: &Read, input: PreviewInput) -> Result<Preview, DomainError> {
        self.inspecting(move |this| this.preview_blocking(input))
            .await
    }

    /// Runs `f` on the blocking pool once an inspection permit is free
    /// (see `Inner::previews`): previews and explanations share them, as any
    /// reader may ask for either. The permit goes with the evaluation, so a
    /// caller that hangs up frees it only when the work it started is done;
    /// [`INSPECT_DEADLINE`] bounds how long that is.
    async fn inspecting<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Groups) -> Result<T, DomainError> + Send + 'static,
    ) -> Result<T, DomainError> {
        let permit = Arc::clone(&self.inner.previews)
            .acquire_owned()
            .await
            .map_err(|e| DomainError::Internal(e.to_string()))?;
        let this = self.clone();
        match tokio::task::spawn_blocking(move || {
            let out = f(&this);
            drop(permit);
            out
        })
        .await
        {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn preview_blocking(&self, input: PreviewInput) -> Result<Preview, DomainError> {
        let started = crate::clock::Stopwatch::start();
        let store = self.store();
        let limit = input.limit.unwrap_or(DEFAULT_PREVIEW_IDS);
        if limit > MAX_PREVIEW_IDS {
            return Err(DomainError::invalid(
                "limit",
                format!("must be at most {MAX_PREVIEW_IDS}"),
            ));
        }
        let existing = match input.group_id {
            Some(id) => {
                let g = load(store, &id).map_err(|_| {
                    DomainError::invalid("group_id", format!("no group with id {id}"))
                })?;
                if g.subject != input.subject {
                    return Err(DomainError::invalid(
                        "group_id",
                        format!("group {:?} holds {}s", g.name, g.subject.as_str()),
                    ));
                }
                Some(g)
            }
            None => None,
        };
        let now = self.now();
        let mut group = build(
            GroupInput {
                name: existing
                    .as_ref()
                    .map_or("preview".into(), |g| g.name.clone()),
                subject: input.subject,
                description: None,
                group_type: GroupType::Dynamic,
                rule: Some(input.rule),
                exclusion: input.exclusion,
                evaluator: input.evaluator,
                review: false,
                member_states: input.member_states,
            },
            existing.as_ref(),
            now,
        )?;
        group.built_in = false;
        let (warnings, plan) = self.validate_and_compile(store, &group, plan::parallelism())?;
        let (universe, snapshot) = self.universe_for(&group, &plan, None)?;
        let mut outcome = Run::new(
            store,
            &snapshot,
            &plan,
            &universe,
            now,
            Mode::Preview,
            false,
        )
        .deadline(Some(started.deadline(INSPECT_DEADLINE)))
        .run()?;
        let result = outcome.groups.remove(&group.id).unwrap_or_default();
        if let Some(reason) = result.failure {
            return Err(failure(&group, reason));
        }
        // A rule that passes a bound for some subject is refused whole: a
        // preview that leaves those subjects out would mislead, and the
        // admin needs to know which limit to stay under.
        if let Some(refusal) = result.errors.values().find_map(|m| refusal(m)) {
            return Err(refusal);
        }
        let members: BTreeSet<Uuid> = result.members.iter().copied().collect();
        let current: BTreeSet<Uuid> = if existing.is_some() {
            result.current.iter().copied().collect()
        } else {
            BTreeSet::new()
        };
        let added: BTreeSet<Uuid> = members.difference(&current).copied().collect();
        let removed: BTreeSet<Uuid> = current.difference(&members).copied().collect();
        let mut examples: Vec<ErrorExample> = result
            .errors
            .iter()
            .map(|(s, m)| ErrorExample {
                subject_id: *s,
                message: m.clone(),
            })
            .collect();
        examples.sort_by_key(|e| e.subject_id);
        examples.truncate(5);
        Ok(Preview {
            members: IdList::of(&members, limit),
            added: IdList::of(&added, limit),
            removed: IdList::of(&removed, limit),
            warnings,
            evaluation_errors: result.errors.len() as u64,
            error_examples: examples,
            evaluated_at: now,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Explains why `subject` is or is not a member of `group`, condition by
    /// condition. Nothing is written.
    pub async fn explain(
        &self,
        _: &Read,
        group: Uuid,
        subject: Uuid,
    ) -> Result<Explanation, DomainError> {
        self.inspecting(move |this| this.explain_blocking(group, subject))
            .await
    }

    fn explain_blocking(&self, group_id: Uuid, subject: Uuid) -> Result<Explanation, DomainError> {
        let store = self.store();
        let group = load(store, &group_id)?;
        let key = pair(&group_id, &subject);
        if !crate::directory::read::subject_exists(store, group.subject, &subject)? {
            return Err(DomainError::not_found(
                match group.subject {
                    SubjectKind::User => "user",
                    SubjectKind::Device => "device",
                },
                subject,
            ));
        }
        let stored = Membership::read(store.get(MEMBERS, &key)?)?;
        let exemption: Option<Exemption> = store.get_json(EXEMPTIONS, &key)?;
        let manual = store.get(MANUAL, &key)?.is_some();
        let suggestion: Option<Suggestion> = store.get_json(SUGGESTIONS, &key)?;
        let now = self.now();
        let exemption_active = exemption.as_ref().is_some_and(|e| e.active(now));
        let mut out = Explanation {
            group_id,
            subject_id: subject,
            member: stored.is_some(),
            source: stored.as_ref().map(|m| m.source),
            summary: String::new(),
            group_type: group.group_type,
            state: None,
            exemption: exemption.clone(),
            exemption_active,
            manual,
            rule: None,
            exclusion: None,
            suggestion,
            evaluation_error: None,
        };
        if !group.is_dynamic() {
            out.summary = if manual {
                "a member: it was added to this static group by hand".into()
            } else {
                "not a member: this is a static group, and it was not added to it".into()
            };
            return Ok(out);
        }
        let schema = self.schema()?;
        let ctx = self.expression_context(&schema, &self.all_groups(store)?);
        let plan = plan::build(
            &self.inner.registry,
            &schema,
            &ctx,
            vec![Arc::new(group.clone())],
            false,
            1,
        )?;
        if let Some(reason) = plan.failed.get(&group_id) {
            out.evaluation_error = Some(reason.clone());
            out.summary = format!("the rule cannot be evaluated: {reason}");
            return Ok(out);
        }
        let (universe, snapshot) = self.universe_for(&group, &plan, Some(subject))?;
        let outcome = Run::new(store, &snapshot, &plan, &universe, now, Mode::Preview, true)
            .deadline(Some(crate::clock::Deadline::after(INSPECT_DEADLINE)))
            .run()?;
        let result = outcome.groups.get(&group_id);
        if let Some(reason) = result.and_then(|r| r.failure.clone()) {
            out.evaluation_error = Some(reason.clone());
            out.summary = format!("the rule could not be evaluated: {reason}");
            return Ok(out);
        }
        out.evaluation_error = result.and_then(|r| r.errors.get(&subject).cloned());
        // Running out of budget is what the rule does for this subject, and
        // is the explanation; running out of time is not.
        if let Some(refusal) = out
            .evaluation_error
            .as_deref()
            .and_then(refusal)
            .filter(|e| {
                matches!(
                    e,
                    DomainError::Limit {
                        code: "too_slow",
                        ..
                    }
                )
            })
        {
            return Err(refusal);
        }
        let (rule_match, excluded) = result
            .and_then(|r| r.verdicts.get(&subject).copied())
            .unwrap_or((false, false));
        let parsed = Parsed::of(&group, &ctx)?;
        let names = self.group_names(store, &parsed, group.subject)?;
        let ctx = Ctx {
            plan: &plan,
            explanations: &outcome.explanations,
            nested: &outcome.nested,
            expression_parts: &outcome.expression_parts,
            names: &names,
        };
        out.rule = Some(ctx.rule(
            Unit::Rule(group_id),
            "rule",
            parsed.rule.as_ref(),
            subject,
            rule_match,
        ));
        if group.exclusion.is_some() {
            out.exclusion = Some(ctx.rule(
                Unit::Exclusion(group_id),
                "exclusion",
                parsed.exclusion.as_ref(),
                subject,
                excluded,
            ));
        }
        let state = universe
            .side(group.subject)
            .subjects
            .iter()
            .find(|s| s.id() == subject)
            .and_then(|s| s.state());
        if let Some(state) = state {
            out.state = Some(StateCheck {
                state,
                member_states: group.member_states.clone(),
                admitted: group.member_states.contains(&state),
            });
        }
        out.summary = summary(&group, &out, rule_match, excluded);
        Ok(out)
    }

    /// The subjects to evaluate (everything, or one subject with what its
    /// cross-subject conditions look at) and a copy of the memberships the
    /// rule reads, taken from the replica so evaluation runs without locks.
    fn universe_for(
        &self,
        group: &Group,
        plan: &plan::Plan,
        one: Option<Uuid>,
    ) -> Result<(Universe, Snapshot), DomainError> {
        let rep = self.replica_read()?;
        let wanted: Vec<Uuid> = match plan.memberships_read() {
            Some(groups) => std::iter::once(group.id).chain(groups).collect(),
            None => rep.group_ids(),
        };
        let universe = match one {
            None => Universe::everything(&rep),
            Some(subject) => {
                let (users, devices): (BTreeSet<Uuid>, BTreeSet<Uuid>) = match group.subject {
                    SubjectKind::User => ([subject].into(), BTreeSet::new()),
                    SubjectKind::Device => (BTreeSet::new(), [subject].into()),
                };
                Universe::around(
                    &rep,
                    &users,
                    &devices,
                    plan.has_related(SubjectKind::User),
                    plan.has_related(SubjectKind::Device),
                )
            }
        };
        Ok((universe, rep.snapshot(wanted)))
    }

    fn group_names(
        &self,
        r: &impl Reader,
        parsed: &Parsed,
        kind: SubjectKind,
    ) -> Result<HashMap<Uuid, String>, DomainError> {
        let mut names = HashMap::new();
        for reference in parsed.references(kind) {
            if let Ok(g) = load(r, &reference.group) {
                names.insert(g.id, g.name);
            }
        }
        Ok(names)
    }
}

struct Ctx<'a> {
    plan: &'a plan::Plan,
    explanations: &'a [Explained],
    nested: &'a HashMap<usize, HashMap<Uuid, bool>>,
    expression_parts: &'a HashMap<usize, HashMap<Uuid, PartValues>>,
    names: &'a HashMap<Uuid, String>,
}

impl Ctx<'_> {
    fn outcomes(&self, unit: Unit, subject: Uuid) -> impl Iterator<Item = &Explained> {
        self.explanations
            .iter()
            .filter(move |x| x.unit == unit && x.subject == subject)
    }

    fn rule(
        &self,
        unit: Unit,
        field: &str,
        model: Option<&RuleModel>,
        subject: Uuid,
        matched: bool,
    ) -> RuleExplanation {
        let host: HashMap<String, &Cond> =
            model.map(|m| m.conditions().collect()).unwrap_or_default();
        let conditions = self
            .outcomes(unit, subject)
            .map(|x| {
                let at = format!("{field}{}", x.outcome.at);
                let mut c = ConditionExplanation {
                    at,
                    matched: x.outcome.matched,
                    detail: x.outcome.detail.clone(),
                    group: None,
                    related: None,
                    expression: None,
                };
                match host.get(&x.outcome.at) {
                    Some(Cond::Member { group, negate }) => {
                        let name = self.names.get(group).cloned();
                        let shown = name
                            .clone()
                            .map_or_else(|| group.to_string(), |n| format!("{n:?}"));
                        let is_member = x.outcome.matched != *negate;
                        c.detail = format!(
                            "{} a member of {shown}; the condition asks for {}",
                            if is_member { "is" } else { "is not" },
                            if *negate {
                                "not being one"
                            } else {
                                "being one"
                            }
                        );
                        c.group = Some(GroupRef { id: *group, name });
                    }
                    Some(Cond::Related { quantifier, .. }) => {
                        c.related = Some(self.related(&c.at, *quantifier));
                        let rel = c.related.as_ref().expect("set above");
                        let hits = rel.subjects.iter().filter(|s| s.matched).count();
                        c.detail = format!(
                            "{hits} of {} related subjects match; the condition needs {}",
                            rel.subjects.len(),
                            match quantifier {
                                Quantifier::Any => "at least one",
                                Quantifier::All => "at least one, and all of them",
                                Quantifier::None => "none",
                            }
                        );
                    }
                    Some(Cond::Expr {
                        at: expr_at,
                        compiled: Some(e),
                        ..
                    }) => {
                        c = self.expression_condition(
                            format!("{field}{expr_at}"),
                            e,
                            x.outcome.matched,
                            subject,
                        );
                    }
                    _ => {}
                }
                c
            })
            .collect::<Vec<_>>();
        // A rule that is a single expression is decided by it alone, with
        // no evaluator outcome to report.
        let conditions = match model.and_then(RuleModel::single_expression) {
            Some((at, e)) if conditions.is_empty() => {
                vec![self.expression_condition(format!("{field}{at}"), e, matched, subject)]
            }
            _ => conditions,
        };
        RuleExplanation {
            matched,
            conditions,
        }
    }

    /// An expression's outcome for `subject`, with the value of each part.
    fn expression_condition(
        &self,
        at: String,
        e: &Expression,
        matched: bool,
        subject: Uuid,
    ) -> ConditionExplanation {
        let values = self
            .plan
            .expressions
            .iter()
            .position(|d| d.field == at && !d.nested)
            .and_then(|n| self.expression_parts.get(&n))
            .and_then(|m| m.get(&subject));
        let parts: Vec<ExpressionPart> = e
            .parts()
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let v = values.and_then(|v| v.get(i));
                ExpressionPart {
                    text: part.text.clone(),
                    value: v.and_then(|r| r.as_ref().ok().copied()),
                    error: v.and_then(|r| r.as_ref().err().cloned()),
                }
            })
            .collect();
        let shown: Vec<String> = parts
            .iter()
            .map(|p| match (&p.value, &p.error) {
                (Some(v), _) => format!("`{}` is {v}", p.text),
                (None, Some(err)) => format!("`{}` fails: {err}", p.text),
                (None, None) => format!("`{}` was not evaluated", p.text),
            })
            .collect();
        ConditionExplanation {
            at,
            matched,
            detail: format!("the expression is {matched}: {}", shown.join("; ")),
            group: None,
            related: None,
            expression: Some(ExpressionExplanation {
                source: e.source().to_string(),
                chain: match e.chain() {
                    Chain::And => "and",
                    Chain::Or => "or",
                    Chain::Single => "single",
                }
                .into(),
                parts,
            }),
        }
    }

    fn related(&self, at: &str, quantifier: Quantifier) -> RelatedExplanation {
        // The definition's field names the related kind: `…/devices`.
        let Some((n, def)) = self.plan.related.iter().enumerate().find(|(_, d)| {
            d.field
                .strip_prefix(at)
                .is_some_and(|rest| rest == "/devices" || rest == "/users")
        }) else {
            return RelatedExplanation {
                quantifier,
                subjects: Vec::new(),
            };
        };
        let mut subjects: Vec<RelatedSubject> = self
            .nested
            .get(&n)
            .map(|m| {
                m.iter()
                    .map(|(id, matched)| RelatedSubject {
                        subject_id: *id,
                        matched: *matched,
                        conditions: self
                            .outcomes(Unit::Related(n), *id)
                            .map(|x| ConditionExplanation {
                                at: format!("{}{}", def.field, x.outcome.at),
                                matched: x.outcome.matched,
                                detail: if x.outcome.detail.contains("$expr:") {
                                    format!("the expression is {}", x.outcome.matched)
                                } else {
                                    x.outcome.detail.clone()
                                },
                                group: None,
                                related: None,
                                expression: None,
                            })
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        subjects.sort_by_key(|s| s.subject_id);
        RelatedExplanation {
            quantifier,
            subjects,
        }
    }
}

fn summary(group: &Group, out: &Explanation, rule_match: bool, excluded: bool) -> String {
    let admitted = out.state.as_ref().is_none_or(|s| s.admitted);
    let exemption = out.exemption.as_ref().filter(|_| out.exemption_active);
    let reason = exemption
        .and_then(|e| e.reason.as_deref())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let mut s = match (exemption.map(|e| e.kind), out.member) {
        (Some(ExemptionKind::Never), _) => {
            format!("not a member: a \"never\" exemption keeps it out{reason}")
        }
        (Some(ExemptionKind::Always), true) => {
            format!("a member through an \"always\" exemption{reason}")
        }
        (Some(ExemptionKind::Always), false) if !admitted => format!(
            "not a member: it has an \"always\" exemption{reason}, but the group admits only {} users",
            states(&group.member_states)
        ),
        _ if out.manual && out.member => {
            "a member added by hand (kept when the group became dynamic)".to_string()
        }
        _ if out.member && !rule_match => {
            "a member: the rule no longer matches, but the group is in review mode and the removal awaits review".to_string()
        }
        _ if out.member => "a member: the rule matches".to_string(),
        _ if excluded => "not a member: the exclusion rule matches".to_string(),
        _ if rule_match && !admitted => format!(
            "not a member: the rule matches, but the group admits only {} users and this one is {}",
            states(&group.member_states),
            out.state.as_ref().map_or("", |s| s.state.as_str())
        ),
        _ if rule_match && group.review => {
            "not a member yet: the rule matches, and the group is in review mode".to_string()
        }
        _ => "not a member: the rule does not match".to_string(),
    };
    if let Some(sg) = out.suggestion.as_ref().filter(|s| !s.dismissed) {
        s.push_str(&format!(
            "; review mode: the rule suggests {} it",
            match sg.action {
                super::model::SuggestionAction::Add => "adding",
                super::model::SuggestionAction::Remove => "removing",
            }
        ));
    }
    s
}

fn states(s: &[UserState]) -> String {
    s.iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
