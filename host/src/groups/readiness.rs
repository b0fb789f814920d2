//! Which dynamic groups cannot be evaluated because their rule-evaluator
//! plugin is not loaded: not installed (the server was started without its
//! plugins directory), disabled, or not a rule evaluator. Such a group keeps
//! its members as they were, so the directory is not ready to answer for
//! it; `/readyz` says so, and names the groups and the plugins.
//!
//! Readiness is polled often and by anyone, so what each group needs is
//! worked out once per change of the groups (the generation), and each
//! poll only asks the plugin registry about the few evaluators in use. A
//! group change moves the generation just before it commits, so a poll in
//! between may remember the groups as they were; that is why the list is
//! also worked out again after a few seconds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Groups;
use super::model::Group;
use super::rule::{Cond, RuleModel};
use crate::directory::SubjectKind;
use crate::error::DomainError;
use crate::plugins::{PluginError, World};

/// A dynamic group whose evaluator cannot be called.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct WaitingGroup {
    /// The group.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Whether it holds users or devices.
    pub subject: SubjectKind,
    /// The rule-evaluator plugin it needs.
    pub evaluator: String,
    /// Why that plugin cannot be called: `not_installed`, `disabled`, or
    /// `not_a_rule_evaluator`.
    pub reason: String,
}

/// How long the list of groups that call an evaluator is trusted without a
/// group change.
const RECHECK_AFTER: chrono::Duration = chrono::Duration::seconds(5);

/// The dynamic groups that call an evaluator, for a generation of the
/// groups, worked out at a time.
pub(super) struct Needs {
    generation: u64,
    at: DateTime<Utc>,
    groups: Arc<Vec<Need>>,
}

/// A dynamic group that calls its evaluator, as the cache keeps it.
#[derive(Clone, Debug)]
pub(super) struct Need {
    id: Uuid,
    name: String,
    subject: SubjectKind,
    evaluator: String,
}

/// Whether evaluating `g` calls its evaluator plugin. Everything does but a
/// rule (and exclusion) that is one CEL expression, which the host
/// evaluates itself. A rule that does not parse is counted as needing it:
/// it is broken either way, and the evaluator is what would say how.
fn uses_evaluator(g: &Group) -> bool {
    [("rule", &g.rule), ("exclusion", &g.exclusion)]
        .into_iter()
        .any(|(field, raw)| match raw {
            None => false,
            Some(Value::String(_)) => true,
            Some(v) => RuleModel::parse(v, g.subject, field).map_or(true, |m| !lone_expression(&m)),
        })
}

fn lone_expression(m: &RuleModel) -> bool {
    let mut conditions = m.conditions();
    matches!(
        (conditions.next(), conditions.next()),
        (Some((_, Cond::Expr { nested: false, .. })), None)
    )
}

impl Groups {
    /// The dynamic groups that wait for an evaluator plugin that cannot be
    /// called now, by name.
    pub fn waiting_for_evaluators(&self) -> Result<Vec<WaitingGroup>, DomainError> {
        let needs = self.evaluator_needs()?;
        let registry = &self.inner.registry;
        let mut verdicts: BTreeMap<&str, Option<&'static str>> = BTreeMap::new();
        let mut out = Vec::new();
        for n in needs.iter() {
            let verdict = *verdicts.entry(n.evaluator.as_str()).or_insert_with(|| {
                match registry.callable(&n.evaluator, World::RuleEvaluator) {
                    Ok(_) => None,
                    Err(PluginError::NotFound(_)) => Some("not_installed"),
                    Err(PluginError::Disabled(_)) => Some("disabled"),
                    Err(_) => Some("not_a_rule_evaluator"),
                }
            });
            if let Some(reason) = verdict {
                out.push(WaitingGroup {
                    id: n.id,
                    name: n.name.clone(),
                    subject: n.subject,
                    evaluator: n.evaluator.clone(),
                    reason: reason.into(),
                });
            }
        }
        out.sort_by_key(|g| g.name.to_lowercase());
        Ok(out)
    }

    /// The dynamic groups that call an evaluator, worked out again when a
    /// group changed or the list is a few seconds old.
    fn evaluator_needs(&self) -> Result<Arc<Vec<Need>>, DomainError> {
        // Read before the groups: a change during the scan leaves a stale
        // list under the old generation, which the next call replaces.
        self.catch_up();
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let now = self.now();
        if let Some(n) = self.inner.needs.lock().as_ref()
            && n.generation == generation
            && now - n.at < RECHECK_AFTER
        {
            return Ok(Arc::clone(&n.groups));
        }
        let needs: Arc<Vec<Need>> = Arc::new(
            self.all_groups(self.store())?
                .iter()
                .filter(|g| g.is_dynamic() && uses_evaluator(g))
                .map(|g| Need {
                    id: g.id,
                    name: g.name.clone(),
                    subject: g.subject,
                    evaluator: g.evaluator.clone(),
                })
                .collect(),
        );
        *self.inner.needs.lock() = Some(Needs {
            generation,
            at: now,
            groups: Arc::clone(&needs),
        });
        Ok(needs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(rule: Value, exclusion: Option<Value>) -> Group {
        Group {
            id: Uuid::now_v7(),
            name: "g".into(),
            subject: SubjectKind::User,
            description: None,
            group_type: super::super::GroupType::Dynamic,
            rule: Some(rule),
            exclusion,
            evaluator: "rules-standard".into(),
            review: false,
            member_states: Vec::new(),
            built_in: false,
            created_at: crate::clock::Clock::now(&crate::clock::SystemClock),
            updated_at: crate::clock::Clock::now(&crate::clock::SystemClock),
            version: 1,
        }
    }

    #[test]
    fn only_a_lone_expression_is_evaluated_without_the_plugin() {
        let attr = json!({"conditions": [{"attribute": "department", "operator": "equals", "values": ["R&D"]}]});
        let cel = json!({"conditions": [{"expression": "user.department == 'R&D'"}]});
        let both = json!({"conditions": [
            {"expression": "user.department == 'R&D'"},
            {"attribute": "department", "operator": "exists"}
        ]});
        assert!(uses_evaluator(&group(attr.clone(), None)));
        assert!(!uses_evaluator(&group(cel.clone(), None)));
        assert!(uses_evaluator(&group(both, None)));
        assert!(uses_evaluator(&group(cel.clone(), Some(attr))));
        assert!(!uses_evaluator(&group(cel.clone(), Some(cel))));
        assert!(uses_evaluator(&group(json!("department = R&D"), None)));
    }
}
