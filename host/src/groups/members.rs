//! Members, exemptions and review suggestions of one group.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cohort_storage::WriteTxn;
use serde_json::{Value, json};
use uuid::Uuid;

use super::layout::{
    EXEMPTIONS, GROUPS, MANUAL, MEMBERS, STATUS, SUBJECT_GROUPS, SUGGESTIONS, pair,
};
use super::model::{
    Exemption, ExemptionInput, Group, Member, Membership, Source, Suggestion, SuggestionAction,
};
use super::{Groups, Scope, apply};
use crate::audit::{self, Record};
use crate::auth::{Actor, ManageDirectory, Mutation, Read};
use crate::directory::{SubjectKind, check_string};
use crate::error::DomainError;
use crate::page::{self, Page, PageRequest};
use cohort_storage::Reader;

fn load_group(r: &impl Reader, id: &Uuid) -> Result<Group, DomainError> {
    r.get_json(GROUPS, id.as_bytes())?
        .ok_or_else(|| DomainError::not_found("group", id))
}

/// Fails unless `subject` is a user or device of the group's kind.
fn check_subject(r: &impl Reader, group: &Group, subject: &Uuid) -> Result<(), DomainError> {
    if !crate::directory::read::subject_exists(r, group.subject, subject)? {
        return Err(DomainError::invalid(
            "subject_id",
            format!("no {} with id {subject}", group.subject.as_str()),
        ));
    }
    Ok(())
}

fn record(
    txn: &mut WriteTxn<'_>,
    now: DateTime<Utc>,
    actor: &Actor,
    action: &str,
    group: &Uuid,
    fields: &[(&str, Value, Value)],
) -> Result<(), DomainError> {
    let changes = audit::changes(fields);
    audit::record(
        txn,
        now,
        actor,
        Record {
            action,
            resource_type: "group",
            resource_id: group.to_string(),
            changes,
        },
    )?;
    Ok(())
}

impl Groups {
    /// Re-evaluates every dynamic group for some subjects (and what depends
    /// on them), after their exemptions, manual membership or suggestions
    /// changed.
    pub(super) fn reevaluate(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        now: DateTime<Utc>,
        kind: SubjectKind,
        subjects: BTreeSet<Uuid>,
        reason: &str,
    ) -> Result<(), DomainError> {
        let plan = self.full_plan(&*txn)?;
        let empty = BTreeSet::new();
        let (users, devices) = match kind {
            SubjectKind::User => (&subjects, &empty),
            SubjectKind::Device => (&empty, &subjects),
        };
        self.run_and_apply(
            txn,
            &plan,
            Scope::Around(users.clone(), devices.clone(), None),
            actor,
            now,
            reason,
            false,
        )?;
        Ok(())
    }

    /// A page of a group's members, in subject id order.
    pub fn list_members(
        &self,
        _: &Read,
        group: &Uuid,
        req: &PageRequest,
    ) -> Result<Page<Member>, DomainError> {
        load_group(self.store(), group)?;
        let tag = format!("members:{group}");
        let resume = req.resume_key(&tag)?;
        let entries = self
            .store()
            .scan(MEMBERS, group.as_bytes(), resume.as_deref(), false);
        page::collect(&tag, req.limit, entries, |k, v| {
            let Some(subject_id) = crate::id_pair::second(k) else {
                return Ok(page::Visit::Skip);
            };
            let m = Membership::decode(v)?;
            Ok(page::Visit::Item(Member {
                subject_id,
                source: m.source,
                since: m.since,
            }))
        })
    }

    /// The groups a user or device is in, with how.
    pub fn groups_of_subject(
        &self,
        _: &Read,
        subject: &Uuid,
    ) -> Result<Vec<(Group, Membership)>, DomainError> {
        let mut out = Vec::new();
        for entry in self
            .store()
            .scan(SUBJECT_GROUPS, subject.as_bytes(), None, false)
        {
            let (k, _) = entry?;
            let Some(g) = crate::id_pair::second(&k) else {
                continue;
            };
            let (Some(group), Some(m)) = (
                self.store().get_json::<Group>(GROUPS, g.as_bytes())?,
                Membership::read(self.store().get(MEMBERS, &pair(&g, subject))?)?,
            ) else {
                continue;
            };
            out.push((group, m));
        }
        Ok(out)
    }

    /// Adds a member by hand. Static groups only; a dynamic group takes an
    /// "always" exemption instead.
    pub async fn add_member(
        &self,
        cap: &ManageDirectory<'_>,
        group: Uuid,
        subject: Uuid,
    ) -> Result<Member, DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let g = load_group(&*txn, &group)?;
            this.add_manual_in(txn, &actor, &g, subject)
        })
        .await
    }

    /// Checks that `group` can receive enrolled devices: it exists and is a
    /// static device group. Errors name `field`.
    pub(crate) fn check_enrollment_group(
        &self,
        r: &impl Reader,
        group: &Uuid,
        field: &str,
    ) -> Result<Group, DomainError> {
        let g = r
            .get_json::<Group>(GROUPS, group.as_bytes())?
            .ok_or_else(|| DomainError::invalid(field, format!("no group with id {group}")))?;
        if g.subject != SubjectKind::Device {
            return Err(DomainError::invalid(
                field,
                format!(
                    "group {:?} is a user group; enrolled devices need a device group",
                    g.name
                ),
            ));
        }
        if g.is_dynamic() {
            return Err(DomainError::invalid(
                field,
                format!(
                    "group {:?} is dynamic: its rule decides its members; name a static device group, or write the rule over the attributes devices report",
                    g.name
                ),
            ));
        }
        Ok(g)
    }

    /// Adds an enrolling device to its enrollment token's static device
    /// group, in the enrollment's transaction. A group that was deleted or
    /// made dynamic since the token was created fails the enrollment (409),
    /// so an admin notices rather than devices silently landing nowhere.
    pub(crate) fn add_enrolled_device_in(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        group: &Uuid,
        device: Uuid,
    ) -> Result<Member, DomainError> {
        let g = self
            .check_enrollment_group(&*txn, group, "device_group")
            .map_err(|e| DomainError::Conflict {
                code: "enrollment_group_unusable",
                field: Some("device_group".into()),
                message: format!(
                    "the enrollment token's device group cannot take devices any more ({e}); create a new token"
                ),
            })?;
        self.add_manual_in(txn, actor, &g, device)
    }

    /// Adds `subject` to `g` by hand, in the caller's transaction.
    pub(crate) fn add_manual_in(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        g: &Group,
        subject: Uuid,
    ) -> Result<Member, DomainError> {
        let group = g.id;
        if g.is_dynamic() {
            return Err(DomainError::Conflict {
                code: "dynamic_group",
                field: None,
                message: "the members of a dynamic group follow its rule; add an \"always\" exemption instead".into(),
            });
        }
        check_subject(&*txn, g, &subject)?;
        let now = self.now();
        let key = pair(&group, &subject);
        if let Some(m) = Membership::read(txn.get(MEMBERS, &key)?)? {
            return Ok(Member {
                subject_id: subject,
                source: m.source,
                since: m.since,
            });
        }
        self.note_special(&group, &subject);
        txn.put(MANUAL, &key, Vec::new());
        self.record_membership(
            txn,
            now,
            actor,
            &group,
            &subject,
            None,
            Some(Source::Manual),
            "added by hand",
        )?;
        let mut status = apply::load_status(txn, &group)?;
        status.member_count += 1;
        txn.put_json(STATUS, group.as_bytes(), &status)?;
        self.reevaluate(
            txn,
            actor,
            now,
            g.subject,
            [subject].into(),
            &format!("member added to group {group}"),
        )?;
        Ok(Member {
            subject_id: subject,
            source: Source::Manual,
            since: now,
        })
    }

    /// Removes a member added by hand (from a static group, or one kept when
    /// the group became dynamic).
    pub async fn remove_member(
        &self,
        cap: &ManageDirectory<'_>,
        group: Uuid,
        subject: Uuid,
    ) -> Result<(), DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let g = load_group(&*txn, &group)?;
            this.remove_manual_in(txn, &actor, &g, subject)
        })
        .await
    }

    /// Removes a member added by hand, in the caller's transaction.
    pub(crate) fn remove_manual_in(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        g: &Group,
        subject: Uuid,
    ) -> Result<(), DomainError> {
        let group = g.id;
        let key = pair(&group, &subject);
        let current = Membership::read(txn.get(MEMBERS, &key)?)?;
        if !txn.contains(MANUAL, &key)? {
            return match current {
                None => Err(DomainError::not_found("member", subject)),
                Some(m) => Err(DomainError::Conflict {
                    code: "not_a_manual_member",
                    field: None,
                    message: format!(
                        "this member is in the group by {}; add a \"never\" exemption to keep it out",
                        if m.source == Source::Rule {
                            "its rule"
                        } else {
                            "an exemption"
                        }
                    ),
                }),
            };
        }
        let now = self.now();
        txn.delete(MANUAL, &key);
        if !g.is_dynamic()
            && let Some(m) = current
        {
            self.record_membership(
                txn,
                now,
                actor,
                &group,
                &subject,
                Some(m.source),
                None,
                "removed by hand",
            )?;
            let mut status = apply::load_status(txn, &group)?;
            status.member_count = status.member_count.saturating_sub(1);
            txn.put_json(STATUS, group.as_bytes(), &status)?;
        }
        // A dynamic group decides again without the manual membership;
        // groups depending on this one follow.
        self.reevaluate(
            txn,
            actor,
            now,
            g.subject,
            [subject].into(),
            &format!("manual member removed from group {group}"),
        )?;
        Ok(())
    }

    /// The exemptions of a dynamic group.
    pub fn list_exemptions(
        &self,
        _: &Read,
        group: &Uuid,
        req: &PageRequest,
    ) -> Result<Page<Exemption>, DomainError> {
        load_group(self.store(), group)?;
        let tag = format!("exemptions:{group}");
        let resume = req.resume_key(&tag)?;
        let entries = self
            .store()
            .scan(EXEMPTIONS, group.as_bytes(), resume.as_deref(), false);
        page::collect(&tag, req.limit, entries, |_, v| {
            Ok(page::Visit::Item(cohort_storage::decode_json(
                EXEMPTIONS, v,
            )?))
        })
    }

    /// Sets an exemption (replacing any for the same subject) and applies it
    /// before returning.
    pub async fn set_exemption(
        &self,
        cap: &ManageDirectory<'_>,
        group: Uuid,
        input: ExemptionInput,
    ) -> Result<Exemption, DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let g = load_group(&*txn, &group)?;
            if !g.is_dynamic() {
                return Err(DomainError::Conflict {
                    code: "static_group",
                    field: None,
                    message: "exemptions override a rule; a static group has none: add or remove the member instead".into(),
                });
            }
            check_subject(&*txn, &g, &input.subject_id)?;
            if let Some(r) = &input.reason {
                check_string("reason", r, 1000)?;
            }
            let now = this.now();
            if input.expires_at.is_some_and(|t| t <= now) {
                return Err(DomainError::invalid("expires_at", "must be in the future"));
            }
            let key = pair(&group, &input.subject_id);
            let before: Option<Exemption> = txn.get_json(EXEMPTIONS, &key)?;
            let exemption = Exemption {
                subject_id: input.subject_id,
                kind: input.kind,
                reason: input.reason,
                expires_at: input.expires_at,
                created_by: actor.name.clone(),
                created_at: now,
            };
            this.note_special(&group, &input.subject_id);
            this.note_expiry(exemption.expires_at);
            txn.put_json(EXEMPTIONS, &key, &exemption)?;
            record(
                txn,
                now,
                &actor,
                "group.exemption_set",
                &group,
                &[
                    ("subject_id", Value::Null, json!(input.subject_id)),
                    ("kind", json!(before.as_ref().map(|b| b.kind)), json!(exemption.kind)),
                    ("reason", Value::Null, json!(exemption.reason)),
                    ("expires_at", Value::Null, json!(exemption.expires_at)),
                ],
            )?;
            this.reevaluate(txn, &actor, now, g.subject, [input.subject_id].into(), &format!("exemption set on group {group}"))?;
            Ok(exemption)
        })
        .await
    }

    /// Removes an exemption; the rule decides again before this returns.
    pub async fn remove_exemption(
        &self,
        cap: &ManageDirectory<'_>,
        group: Uuid,
        subject: Uuid,
    ) -> Result<(), DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let g = load_group(&*txn, &group)?;
            let key = pair(&group, &subject);
            let Some(before) = txn.get_json::<Exemption>(EXEMPTIONS, &key)? else {
                return Err(DomainError::not_found("exemption", subject));
            };
            let now = this.now();
            txn.delete(EXEMPTIONS, &key);
            record(
                txn,
                now,
                &actor,
                "group.exemption_remove",
                &group,
                &[
                    ("subject_id", json!(subject), Value::Null),
                    ("kind", json!(before.kind), Value::Null),
                ],
            )?;
            this.reevaluate(
                txn,
                &actor,
                now,
                g.subject,
                [subject].into(),
                &format!("exemption removed from group {group}"),
            )?;
            Ok(())
        })
        .await
    }

    /// Pending suggestions of a review-mode group (and dismissed ones when
    /// asked).
    pub fn list_suggestions(
        &self,
        _: &Read,
        group: &Uuid,
        dismissed: bool,
        req: &PageRequest,
    ) -> Result<Page<Suggestion>, DomainError> {
        load_group(self.store(), group)?;
        let tag = format!("suggestions:{group}:{dismissed}");
        let resume = req.resume_key(&tag)?;
        let entries = self
            .store()
            .scan(SUGGESTIONS, group.as_bytes(), resume.as_deref(), false);
        page::collect(&tag, req.limit, entries, |_, v| {
            let s: Suggestion = cohort_storage::decode_json(SUGGESTIONS, v)?;
            Ok((s.dismissed == dismissed).then_some(s).into())
        })
    }

    /// Accepts (`accept`) or rejects pending suggestions: those of
    /// `subjects`, or all of them when `None`. Accepted ones change the
    /// membership, and groups depending on this one follow; rejected ones
    /// are dismissed until the rule suggests something else.
    pub async fn decide_suggestions(
        &self,
        cap: &ManageDirectory<'_>,
        group: Uuid,
        subjects: Option<Vec<Uuid>>,
        accept: bool,
    ) -> Result<u64, DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let g = load_group(&*txn, &group)?;
            let pending: Vec<Suggestion> = match &subjects {
                None => txn
                    .scan_prefix(SUGGESTIONS, group.as_bytes())?
                    .iter()
                    .map(|(_, v)| cohort_storage::decode_json::<Suggestion>(SUGGESTIONS, v))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .filter(|s| !s.dismissed)
                    .collect(),
                Some(ids) => {
                    let mut out = Vec::new();
                    for (i, id) in ids.iter().enumerate() {
                        match txn.get_json::<Suggestion>(SUGGESTIONS, &pair(&group, id))? {
                            Some(s) if !s.dismissed => out.push(s),
                            _ => {
                                return Err(DomainError::invalid(
                                    format!("subject_ids[{i}]"),
                                    format!("no pending suggestion for {id}"),
                                ));
                            }
                        }
                    }
                    out
                }
            };
            let now = this.now();
            let mut status = apply::load_status(txn, &group)?;
            let mut touched = BTreeSet::new();
            for s in &pending {
                let key = pair(&group, &s.subject_id);
                status.pending_suggestions = status.pending_suggestions.saturating_sub(1);
                if !accept {
                    txn.put_json(
                        SUGGESTIONS,
                        &key,
                        &Suggestion {
                            dismissed: true,
                            ..s.clone()
                        },
                    )?;
                    record(
                        txn,
                        now,
                        &actor,
                        "group.suggestion_reject",
                        &group,
                        &[
                            ("subject_id", Value::Null, json!(s.subject_id)),
                            ("action", Value::Null, json!(s.action)),
                        ],
                    )?;
                    continue;
                }
                txn.delete(SUGGESTIONS, &key);
                let current = Membership::read(txn.get(MEMBERS, &key)?)?.map(|m| m.source);
                let after = match s.action {
                    SuggestionAction::Add if current.is_none() => Some(Source::Rule),
                    SuggestionAction::Remove if current == Some(Source::Rule) => None,
                    _ => continue,
                };
                this.record_membership(
                    txn,
                    now,
                    &actor,
                    &group,
                    &s.subject_id,
                    current,
                    after,
                    "suggestion accepted",
                )?;
                if after.is_some() {
                    status.member_count += 1;
                } else {
                    status.member_count = status.member_count.saturating_sub(1);
                }
                touched.insert(s.subject_id);
            }
            txn.put_json(STATUS, group.as_bytes(), &status)?;
            if !touched.is_empty() {
                this.reevaluate(
                    txn,
                    &actor,
                    now,
                    g.subject,
                    touched,
                    &format!("suggestions accepted in group {group}"),
                )?;
            }
            Ok(pending.len() as u64)
        })
        .await
    }
}
