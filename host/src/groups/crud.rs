//! Creating, changing, copying and deleting groups. Saving a dynamic group
//! checks its rule completely (structure, references, cycles, and the
//! evaluator's own compile) and computes its members in the same transaction.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cohort_storage::WriteTxn;
use serde_json::Value;
use uuid::Uuid;

use super::layout::{
    ERRORS, EXEMPTIONS, GROUP_NAMES, GROUPS, MANUAL, MEMBERS, REFERENCED_BY, STATUS,
    SUBJECT_GROUPS, SUGGESTIONS, name_key, pair,
};
use super::model::{
    DEFAULT_EVALUATOR, Group, GroupInput, GroupStatus, GroupType, GroupView, Membership, Source,
};
use super::plan::{self, Parsed, find_cycle};
use super::rule::ExpressionContext;
use super::subjects::Reader;
use super::{Groups, Scope, apply};
use crate::audit::{self, Record};
use crate::auth::{Actor, ManageDirectory, Mutation, Read};
use crate::directory::{SubjectKind, UserState, check_string, decode_patch};
use crate::error::DomainError;
use crate::limits::MAX_REFERENCE_DEPTH;
use crate::page::{self, Page, PageRequest};

/// Fields a PATCH may not touch.
const READ_ONLY: &[(&str, &str)] = &[
    ("id", "is assigned by Cohort"),
    ("created_at", "is set by Cohort"),
    ("updated_at", "is set by Cohort"),
    ("version", "is set by Cohort; send it as If-Match instead"),
    ("built_in", "is set by Cohort"),
    ("status", "is computed by Cohort"),
];

pub(super) fn load(r: &impl Reader, id: &Uuid) -> Result<Group, DomainError> {
    r.get_json(GROUPS, id.as_bytes())?
        .ok_or_else(|| DomainError::not_found("group", id))
}

/// Checks input and builds the group it describes.
pub(super) fn build(
    input: GroupInput,
    existing: Option<&Group>,
    now: DateTime<Utc>,
) -> Result<Group, DomainError> {
    let name = input.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 128 {
        return Err(DomainError::invalid("name", "must be 1-128 characters"));
    }
    check_string("name", &name, 128)?;
    if let Some(d) = &input.description {
        check_string("description", d, 4096)?;
    }
    if let Some(e) = existing
        && e.subject != input.subject
    {
        return Err(DomainError::invalid(
            "subject",
            "cannot change; copy the group's rule into a new group instead",
        ));
    }
    let evaluator = input
        .evaluator
        .unwrap_or_else(|| DEFAULT_EVALUATOR.to_string());
    crate::error::check_name(&evaluator).map_err(|_| {
        DomainError::invalid(
            "evaluator",
            "must be the name of an installed rule-evaluator plugin",
        )
    })?;
    let member_states = match (input.subject, input.member_states) {
        (SubjectKind::User, None) => vec![UserState::Active],
        (SubjectKind::User, Some(s)) if s.is_empty() => {
            return Err(DomainError::invalid(
                "member_states",
                "list at least one state (staged, active, suspended)",
            ));
        }
        (SubjectKind::User, Some(mut s)) => {
            s.sort_by_key(|s| s.as_str());
            s.dedup();
            s
        }
        (SubjectKind::Device, None) => Vec::new(),
        (SubjectKind::Device, Some(s)) if s.is_empty() => Vec::new(),
        (SubjectKind::Device, Some(_)) => {
            return Err(DomainError::invalid(
                "member_states",
                "applies only to user groups; devices have no state",
            ));
        }
    };
    match input.group_type {
        GroupType::Dynamic if input.rule.is_none() => {
            return Err(DomainError::invalid_rule(
                "rule",
                "a dynamic group needs a rule",
            ));
        }
        GroupType::Static => {
            for (field, v) in [("rule", &input.rule), ("exclusion", &input.exclusion)] {
                if v.is_some() {
                    return Err(DomainError::invalid_rule(
                        field,
                        format!(
                            "a static group has no {field}; send \"{field}\": null, or make the group dynamic"
                        ),
                    ));
                }
            }
            if input.review {
                return Err(DomainError::invalid(
                    "review",
                    "applies only to dynamic groups",
                ));
            }
        }
        GroupType::Dynamic => {}
    }
    if let Some(e) = existing.filter(|e| e.built_in)
        && (e.rule != input.rule
            || e.exclusion != input.exclusion
            || e.group_type != input.group_type
            || e.evaluator != evaluator)
    {
        {
            return Err(DomainError::Conflict {
                code: "built_in_group",
                field: Some("rule".into()),
                message: format!(
                    "{:?} is a built-in group: its rule and type cannot change; copy it to make a variant",
                    e.name
                ),
            });
        }
    }
    Ok(Group {
        id: existing.map_or_else(Uuid::now_v7, |e| e.id),
        name,
        subject: input.subject,
        description: input.description,
        group_type: input.group_type,
        rule: input.rule,
        exclusion: input.exclusion,
        evaluator,
        review: input.review,
        member_states,
        built_in: existing.is_some_and(|e| e.built_in),
        created_at: existing.map_or(now, |e| e.created_at),
        updated_at: now,
        version: existing.map_or(1, |e| e.version + 1),
    })
}

/// The reference edges of every dynamic group, with `group` as it will be.
fn reference_graph(
    all: &[Arc<Group>],
    group: &Group,
    parsed: &Parsed,
    ctx: &ExpressionContext,
) -> HashMap<Uuid, Vec<Uuid>> {
    let mut edges = HashMap::new();
    for g in all.iter().filter(|g| g.id != group.id && g.is_dynamic()) {
        if let Ok(p) = Parsed::of(g, ctx) {
            edges.insert(
                g.id,
                p.references(g.subject).iter().map(|r| r.group).collect(),
            );
        }
    }
    edges.insert(
        group.id,
        parsed
            .references(group.subject)
            .iter()
            .map(|r| r.group)
            .collect(),
    );
    edges
}

impl Groups {
    /// Checks what a dynamic group's rule refers to: the groups exist, hold
    /// the right kind of subjects, and no cycle forms.
    fn check_references(
        &self,
        r: &impl Reader,
        group: &Group,
        parsed: &Parsed,
    ) -> Result<(), DomainError> {
        let all = self.all_groups(r)?;
        let by_id: HashMap<Uuid, &Arc<Group>> = all.iter().map(|g| (g.id, g)).collect();
        for (field, model) in [("rule", &parsed.rule), ("exclusion", &parsed.exclusion)] {
            let Some(model) = model else { continue };
            for (at, cond) in model.conditions() {
                let refs: Vec<(String, super::rule::Reference)> = match cond {
                    super::rule::Cond::Member { group: g, negate } => vec![(
                        format!(
                            "{field}{at}/{}",
                            if *negate {
                                "not_member_of"
                            } else {
                                "member_of"
                            }
                        ),
                        super::rule::Reference {
                            group: *g,
                            kind: group.subject,
                        },
                    )],
                    super::rule::Cond::Related { kind, rule, .. } => {
                        let key = if *kind == SubjectKind::Device {
                            "devices"
                        } else {
                            "users"
                        };
                        rule.conditions()
                            .filter_map(|(nat, c)| match c {
                                super::rule::Cond::Member { group: g, negate } => Some((
                                    format!(
                                        "{field}{at}/{key}{nat}/{}",
                                        if *negate {
                                            "not_member_of"
                                        } else {
                                            "member_of"
                                        }
                                    ),
                                    super::rule::Reference {
                                        group: *g,
                                        kind: *kind,
                                    },
                                )),
                                _ => None,
                            })
                            .collect()
                    }
                    super::rule::Cond::Expr {
                        at: expr_at,
                        compiled: Some(e),
                        ..
                    } => e
                        .reads()
                        .in_groups
                        .iter()
                        .map(|g| {
                            (
                                format!("{field}{expr_at}"),
                                super::rule::Reference {
                                    group: *g,
                                    kind: e.kind(),
                                },
                            )
                        })
                        .collect(),
                    super::rule::Cond::Attr { .. } | super::rule::Cond::Expr { .. } => Vec::new(),
                };
                for (path, reference) in refs {
                    if reference.group == group.id {
                        return Err(DomainError::invalid_rule(
                            path,
                            format!("the group {:?} cannot refer to itself", group.name),
                        ));
                    }
                    let Some(target) = by_id.get(&reference.group) else {
                        return Err(DomainError::invalid_rule(
                            path,
                            format!("no group with id {}", reference.group),
                        ));
                    };
                    if target.subject != reference.kind {
                        return Err(DomainError::invalid_rule(
                            path,
                            format!(
                                "group {:?} holds {}s; here a {} group is needed",
                                target.name,
                                target.subject.as_str(),
                                reference.kind.as_str()
                            ),
                        ));
                    }
                }
            }
        }
        let ctx = self.expression_context(&self.schema()?, &all);
        let edges = reference_graph(&all, group, parsed, &ctx);
        if let Some(cycle) = find_cycle(&edges, group.id) {
            let name = |id: &Uuid| {
                if *id == group.id {
                    group.name.clone()
                } else {
                    by_id
                        .get(id)
                        .map_or_else(|| id.to_string(), |g| g.name.clone())
                }
            };
            let spelled: Vec<String> = cycle.iter().map(|id| format!("{:?}", name(id))).collect();
            return Err(DomainError::invalid_rule(
                "rule",
                format!(
                    "this rule would form a cycle of group references: {}",
                    spelled.join(" → ")
                ),
            ));
        }
        // The longest chain through this group: what it refers to, and
        // what refers to it.
        let mut reverse: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for (from, tos) in &edges {
            for to in tos {
                reverse.entry(*to).or_default().push(*from);
            }
        }
        let chain = plan::longest_chain(&edges, group.id) + plan::longest_chain(&reverse, group.id);
        if chain > MAX_REFERENCE_DEPTH {
            return Err(DomainError::Limit {
                code: "too_deep",
                field: "rule".into(),
                message: format!(
                    "this rule would make a chain of {chain} group references \
                     (a group that refers to a group that refers to …); \
                     the limit is {MAX_REFERENCE_DEPTH}"
                ),
            });
        }
        Ok(())
    }

    /// Validates a dynamic group's rule and returns the warnings to keep.
    pub(super) fn validate_rule(
        &self,
        r: &impl Reader,
        group: &Group,
    ) -> Result<Vec<super::rule::Warning>, DomainError> {
        Ok(self.validate_and_compile(r, group, 1)?.0)
    }

    /// Validates a dynamic group's rule and compiles it alone (`copies`
    /// instances per program), for runs of just this group.
    pub(super) fn validate_and_compile(
        &self,
        r: &impl Reader,
        group: &Group,
        copies: usize,
    ) -> Result<(Vec<super::rule::Warning>, plan::Plan), DomainError> {
        let schema = self.schema()?;
        let ctx = self.expression_context(&schema, &self.all_groups(r)?);
        let parsed = Parsed::of(group, &ctx)?;
        self.check_references(r, group, &parsed)?;
        // Compiling the group alone finds every problem with its position.
        let compiled = plan::build(
            &self.inner.registry,
            &schema,
            &ctx,
            vec![Arc::new(group.clone())],
            true,
            copies,
        )?;
        let types = schema.types(group.subject);
        let mut warnings = Vec::new();
        if !group.built_in {
            for (field, model) in [("rule", &parsed.rule), ("exclusion", &parsed.exclusion)] {
                if let Some(m) = model {
                    warnings.extend(m.warnings(field, group.subject, &types));
                }
            }
        }
        Ok((warnings, compiled))
    }

    /// Writes a group with its indexes and audit event.
    pub(super) fn put_group(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        action: &str,
        before: Option<&Group>,
        after: &Group,
    ) -> Result<(), DomainError> {
        let new_name = name_key(after.subject, &after.name);
        if before.is_none_or(|b| name_key(b.subject, &b.name) != new_name) {
            if txn.contains(GROUP_NAMES, &new_name)? {
                return Err(DomainError::Conflict {
                    code: "group_name_taken",
                    field: Some("name".into()),
                    message: format!(
                        "another {} group is already named {:?}",
                        after.subject.as_str(),
                        after.name
                    ),
                });
            }
            if let Some(b) = before {
                txn.delete(GROUP_NAMES, &name_key(b.subject, &b.name));
            }
            txn.put(GROUP_NAMES, &new_name, after.id.as_bytes().to_vec());
        }
        let ctx = self.expression_context(&self.schema()?, &self.all_groups(&*txn)?);
        let refs = |g: Option<&Group>| -> BTreeSet<Uuid> {
            g.filter(|g| g.is_dynamic())
                .and_then(|g| Parsed::of(g, &ctx).ok().map(|p| (g.subject, p)))
                .map(|(k, p)| p.references(k).iter().map(|r| r.group).collect())
                .unwrap_or_default()
        };
        let (old_refs, new_refs) = (refs(before), refs(Some(after)));
        for r in old_refs.difference(&new_refs) {
            txn.delete(REFERENCED_BY, &pair(r, &after.id));
        }
        for r in new_refs.difference(&old_refs) {
            txn.put(REFERENCED_BY, &pair(r, &after.id), Vec::new());
        }
        txn.put_json(GROUPS, after.id.as_bytes(), after)?;
        audit::record(
            txn,
            after.updated_at,
            actor,
            Record {
                action,
                resource_type: "group",
                resource_id: after.id.to_string(),
                changes: audit::diff(before, Some(after)),
            },
        )?;
        self.invalidate();
        Ok(())
    }

    /// Groups that refer to `id`, directly or through others.
    fn dependents(&self, r: &impl Reader, id: &Uuid) -> Result<Vec<Uuid>, DomainError> {
        let mut out = Vec::new();
        let mut queue = vec![*id];
        let mut seen = BTreeSet::new();
        while let Some(g) = queue.pop() {
            for (k, _) in r.scan(REFERENCED_BY, g.as_bytes())? {
                if let Some(d) = crate::directory::layout::uuid_at(&k, 16)
                    && seen.insert(d)
                {
                    out.push(d);
                    queue.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Recomputes `id` (and every group depending on it) over the whole
    /// directory, after its rule or settings changed.
    fn evaluate_group(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        now: DateTime<Utc>,
        id: &Uuid,
    ) -> Result<(), DomainError> {
        let mut ids = vec![*id];
        ids.extend(self.dependents(&*txn, id)?);
        let targets: Vec<Arc<Group>> = ids
            .iter()
            .map(|g| load(&*txn, g).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|g| g.is_dynamic())
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let schema = self.schema()?;
        let ctx = self.expression_context(&schema, &self.all_groups(&*txn)?);
        let plan = plan::build(
            &self.inner.registry,
            &schema,
            &ctx,
            targets,
            false,
            plan::parallelism(),
        )?;
        let reason = format!("group {id} changed");
        self.run_and_apply(txn, &plan, Scope::Everything, actor, now, &reason, true)?;
        self.record_failures(txn, &plan)?;
        Ok(())
    }

    /// Keeps the current members as manual members (a static group turning
    /// dynamic keeps them, as in JumpCloud) or makes them manual (dynamic
    /// turning static).
    fn keep_members_as_manual(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        now: DateTime<Utc>,
        group: &Uuid,
    ) -> Result<(), DomainError> {
        for (k, v) in txn.scan_prefix(MEMBERS, group.as_bytes())? {
            let Some(subject) = crate::directory::layout::uuid_at(&k, 16) else {
                continue;
            };
            let m = Membership::decode(&v)?;
            self.note_special(group, &subject);
            txn.put(MANUAL, &pair(group, &subject), Vec::new());
            if m.source != Source::Manual {
                self.record_membership(
                    txn,
                    now,
                    actor,
                    group,
                    &subject,
                    Some(m.source),
                    Some(Source::Manual),
                    "the group became static; its members were kept",
                )?;
            }
        }
        Ok(())
    }

    fn view(&self, r: &impl Reader, group: Group) -> Result<GroupView, DomainError> {
        let mut status: GroupStatus = r.get_json(STATUS, group.id.as_bytes())?.unwrap_or_default();
        for (k, v) in r.scan(ERRORS, group.id.as_bytes())?.into_iter().take(5) {
            if let Some(subject) = crate::directory::layout::uuid_at(&k, 16) {
                status.error_examples.push(super::model::ErrorExample {
                    subject_id: subject,
                    message: String::from_utf8_lossy(&v).into_owned(),
                });
            }
        }
        Ok(GroupView { group, status })
    }

    fn save_warnings(
        txn: &mut WriteTxn<'_>,
        id: &Uuid,
        warnings: Vec<super::rule::Warning>,
    ) -> Result<(), DomainError> {
        let mut status = apply::load_status(txn, id)?;
        if status.warnings != warnings {
            status.warnings = warnings;
            txn.put_json(STATUS, id.as_bytes(), &status)?;
        }
        Ok(())
    }

    fn create_in(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        group: &Group,
    ) -> Result<(), DomainError> {
        let warnings = if group.is_dynamic() {
            self.validate_rule(&*txn, group)?
        } else {
            Vec::new()
        };
        self.put_group(txn, actor, "group.create", None, group)?;
        Self::save_warnings(txn, &group.id, warnings)?;
        if group.is_dynamic() {
            self.evaluate_group(txn, actor, group.updated_at, &group.id)?;
        }
        Ok(())
    }

    /// Creates a group; a dynamic group's members are computed before this
    /// returns.
    pub async fn create_group(
        &self,
        cap: &ManageDirectory<'_>,
        input: GroupInput,
    ) -> Result<GroupView, DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let group = build(input, None, this.now())?;
            this.create_in(txn, &actor, &group)?;
            this.view(&*txn, group)
        })
        .await
    }

    /// Creates (`id` none) or changes a static user group so that its name
    /// is `name` and its manual members are exactly `members`, in one
    /// transaction: for provisioning, where a group arrives whole (a SCIM
    /// PUT or PATCH). Refuses dynamic groups and device groups.
    pub async fn put_static(
        &self,
        cap: &ManageDirectory<'_>,
        id: Option<Uuid>,
        name: String,
        members: BTreeSet<Uuid>,
        if_match: Option<u64>,
    ) -> Result<GroupView, DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let group = match id {
                None => {
                    let input = GroupInput {
                        name,
                        subject: SubjectKind::User,
                        description: None,
                        group_type: GroupType::Static,
                        rule: None,
                        exclusion: None,
                        evaluator: None,
                        review: false,
                        member_states: None,
                    };
                    let group = build(input, None, this.now())?;
                    this.create_in(txn, &actor, &group)?;
                    group
                }
                Some(id) => {
                    let before = load(&*txn, &id)?;
                    if before.is_dynamic() || before.subject != SubjectKind::User {
                        return Err(DomainError::not_found("static user group", id));
                    }
                    if let Some(v) = if_match
                        && v != before.version
                    {
                        return Err(DomainError::VersionMismatch {
                            current: before.version,
                        });
                    }
                    if before.name == name {
                        before
                    } else {
                        let mut input = GroupInput::from(&before);
                        input.name = name;
                        let after = build(input, Some(&before), this.now())?;
                        if before.name.to_lowercase() != after.name.to_lowercase() {
                            this.check_not_named(&*txn, &before)?;
                        }
                        this.put_group(txn, &actor, "group.update", Some(&before), &after)?;
                        after
                    }
                }
            };
            let current: BTreeSet<Uuid> = txn
                .scan_prefix(MANUAL, group.id.as_bytes())?
                .iter()
                .filter_map(|(k, _)| crate::directory::layout::uuid_at(k, 16))
                .collect();
            for gone in current.difference(&members) {
                this.remove_manual_in(txn, &actor, &group, *gone)?;
            }
            for new in members.difference(&current) {
                this.add_manual_in(txn, &actor, &group, *new)?;
            }
            this.view(&*txn, group)
        })
        .await
    }

    /// One group with its status.
    pub fn get_group(&self, _: &Read, id: &Uuid) -> Result<GroupView, DomainError> {
        let group = load(self.store(), id)?;
        self.view(self.store(), group)
    }

    /// A page of groups, optionally of one kind and type, in creation order.
    pub fn list_groups(
        &self,
        _: &Read,
        subject: Option<SubjectKind>,
        group_type: Option<GroupType>,
        req: &PageRequest,
    ) -> Result<Page<GroupView>, DomainError> {
        let tag = format!(
            "groups:{}:{}",
            subject.map_or("", |s| s.as_str()),
            match group_type {
                Some(GroupType::Static) => "static",
                Some(GroupType::Dynamic) => "dynamic",
                None => "",
            }
        );
        let resume = req.resume_key(&tag)?;
        let entries = self.store().scan(GROUPS, b"", resume.as_deref(), false);
        page::collect(&tag, req.limit, entries, |_, v| {
            let g: Group = cohort_storage::decode_json(GROUPS, v)?;
            let keep = subject.is_none_or(|s| s == g.subject)
                && group_type.is_none_or(|t| t == g.group_type);
            if !keep {
                return Ok(page::Visit::Skip);
            }
            Ok(page::Visit::Item(self.view(self.store(), g)?))
        })
    }

    /// Applies a JSON merge patch to a group. A changed rule is validated and
    /// the members recomputed (with the groups depending on this one) before
    /// this returns.
    pub async fn update_group(
        &self,
        cap: &ManageDirectory<'_>,
        id: Uuid,
        patch: Value,
        if_match: Option<u64>,
    ) -> Result<GroupView, DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let before = load(&*txn, &id)?;
            if let Some(v) = if_match
                && v != before.version
            {
                return Err(DomainError::VersionMismatch {
                    current: before.version,
                });
            }
            let input: GroupInput = decode_patch(&GroupInput::from(&before), &patch, READ_ONLY)?;
            let after = build(input, Some(&before), this.now())?;
            let unchanged = Group {
                updated_at: after.updated_at,
                version: after.version,
                ..before.clone()
            } == after;
            if unchanged {
                return this.view(&*txn, before);
            }
            if before.name.to_lowercase() != after.name.to_lowercase() {
                this.check_not_named(&*txn, &before)?;
            }
            let now = after.updated_at;
            let warnings = if after.is_dynamic() {
                this.validate_rule(&*txn, &after)?
            } else {
                Vec::new()
            };
            this.put_group(txn, &actor, "group.update", Some(&before), &after)?;
            Self::save_warnings(txn, &id, warnings)?;
            match (before.group_type, after.group_type) {
                (GroupType::Static, GroupType::Dynamic) => {
                    this.keep_members_as_manual(txn, &actor, now, &id)?;
                }
                (GroupType::Dynamic, GroupType::Static) => {
                    this.keep_members_as_manual(txn, &actor, now, &id)?;
                    this.clear_dynamic_state(txn, &id)?;
                }
                _ => {}
            }
            let recompute = after.is_dynamic()
                && (before.rule != after.rule
                    || before.exclusion != after.exclusion
                    || before.evaluator != after.evaluator
                    || before.review != after.review
                    || before.member_states != after.member_states
                    || before.group_type != after.group_type);
            if recompute {
                this.evaluate_group(txn, &actor, now, &id)?;
            }
            this.view(&*txn, after)
        })
        .await
    }

    /// Refuses to rename `group` while an expression names it in
    /// `in_group('…')`: the expression would no longer find it.
    fn check_not_named(&self, r: &impl Reader, group: &Group) -> Result<(), DomainError> {
        let referrers = self.dependents(r, &group.id)?;
        if referrers.is_empty() {
            return Ok(());
        }
        let all = self.all_groups(r)?;
        let ctx = self.expression_context(&self.schema()?, &all);
        let mut naming = Vec::new();
        for g in all.iter().filter(|g| referrers.contains(&g.id)) {
            let Ok(p) = Parsed::of(g, &ctx) else { continue };
            let names_it = [&p.rule, &p.exclusion]
                .into_iter()
                .flatten()
                .flat_map(|m| m.expressions())
                .any(|c| {
                    matches!(c, super::rule::Cond::Expr { compiled: Some(e), .. } if e.names_group(&group.id))
                });
            if names_it {
                naming.push(format!("{:?}", g.name));
            }
        }
        if naming.is_empty() {
            return Ok(());
        }
        Err(DomainError::Conflict {
            code: "group_in_use",
            field: Some("name".into()),
            message: format!(
                "the rules of {} name this group in in_group({:?}); change them first, or \
                 write the group's id ({}) there, which survives renames",
                naming.join(", "),
                group.name,
                group.id
            ),
        })
    }

    /// Drops exemptions, suggestions and evaluation errors of a group that
    /// became static.
    fn clear_dynamic_state(&self, txn: &mut WriteTxn<'_>, id: &Uuid) -> Result<(), DomainError> {
        for ks in [EXEMPTIONS, SUGGESTIONS, ERRORS] {
            for (k, _) in txn.scan_prefix(ks, id.as_bytes())? {
                txn.delete(ks, &k);
            }
        }
        let mut status = apply::load_status(txn, id)?;
        status.pending_suggestions = 0;
        status.evaluation_errors = 0;
        status.warnings.clear();
        status.evaluator_error = None;
        txn.put_json(STATUS, id.as_bytes(), &status)?;
        Ok(())
    }

    /// Deletes a group with its memberships, exemptions and suggestions.
    /// Refused while another group's rule refers to it, or for built-in groups.
    pub async fn delete_group(
        &self,
        cap: &ManageDirectory<'_>,
        id: Uuid,
        if_match: Option<u64>,
    ) -> Result<(), DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let group = load(&*txn, &id)?;
            if let Some(v) = if_match
                && v != group.version
            {
                return Err(DomainError::VersionMismatch {
                    current: group.version,
                });
            }
            if group.built_in {
                return Err(DomainError::Conflict {
                    code: "built_in_group",
                    field: None,
                    message: format!("{:?} is a built-in group and cannot be deleted", group.name),
                });
            }
            let users: Vec<String> = txn
                .scan_prefix(REFERENCED_BY, id.as_bytes())?
                .iter()
                .filter_map(|(k, _)| crate::directory::layout::uuid_at(k, 16))
                .filter_map(|g| {
                    load(&*txn, &g)
                        .ok()
                        .map(|g| format!("{:?} ({})", g.name, g.id))
                })
                .collect();
            if !users.is_empty() {
                return Err(DomainError::Conflict {
                    code: "group_in_use",
                    field: None,
                    message: format!(
                        "the rules of {} refer to this group; change them first",
                        users.join(", ")
                    ),
                });
            }
            if let Some(place) = crate::federation::routing::uses_group(&*txn, &id)? {
                return Err(DomainError::Conflict {
                    code: "group_in_use",
                    field: None,
                    message: format!(
                        "sign-in routing uses this group ({place}); change the routing first"
                    ),
                });
            }
            let status = apply::load_status(txn, &id)?;
            for (k, _) in txn.scan_prefix(MEMBERS, id.as_bytes())? {
                if let Some(subject) = crate::directory::layout::uuid_at(&k, 16) {
                    txn.delete(SUBJECT_GROUPS, &pair(&subject, &id));
                }
                txn.delete(MEMBERS, &k);
            }
            for ks in [MANUAL, EXEMPTIONS, SUGGESTIONS, ERRORS] {
                for (k, _) in txn.scan_prefix(ks, id.as_bytes())? {
                    txn.delete(ks, &k);
                }
            }
            let ctx = this.expression_context(&this.schema()?, &this.all_groups(&*txn)?);
            if let Ok(p) = Parsed::of(&group, &ctx) {
                for r in p.references(group.subject) {
                    txn.delete(REFERENCED_BY, &pair(&r.group, &id));
                }
            }
            if let Some(rep) = this.inner.replica.lock().as_mut() {
                rep.drop_group(&id);
            }
            crate::access::forget_group(txn, &id)?;
            txn.delete(STATUS, id.as_bytes());
            txn.delete(GROUP_NAMES, &name_key(group.subject, &group.name));
            txn.delete(GROUPS, id.as_bytes());
            let mut changes = audit::diff(Some(&group), None);
            changes.insert(
                "member_count".into(),
                audit::Change {
                    before: serde_json::json!(status.member_count),
                    after: Value::Null,
                },
            );
            audit::record(
                txn,
                this.now(),
                &actor,
                Record {
                    action: "group.delete",
                    resource_type: "group",
                    resource_id: id.to_string(),
                    changes,
                },
            )?;
            this.invalidate();
            Ok(())
        })
        .await
    }

    /// Copies a group under a new name: rule, exclusion, settings, exemptions
    /// and manual members. The copy is never built-in.
    pub async fn copy_group(
        &self,
        cap: &ManageDirectory<'_>,
        id: Uuid,
        name: String,
    ) -> Result<GroupView, DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let source = load(&*txn, &id)?;
            let mut input = GroupInput::from(&source);
            input.name = name;
            let now = this.now();
            let mut group = build(input, None, now)?;
            group.built_in = false;
            // Exemptions and manual members first, so the first evaluation
            // already honours them.
            for ks in [EXEMPTIONS, MANUAL] {
                for (k, v) in txn.scan_prefix(ks, id.as_bytes())? {
                    if let Some(subject) = crate::directory::layout::uuid_at(&k, 16) {
                        let key = pair(&group.id, &subject);
                        this.note_special(&group.id, &subject);
                        txn.put(ks, &key, v);
                    }
                }
            }
            this.create_in(txn, &actor, &group)?;
            if !group.is_dynamic() {
                // A static copy has its manual members as members.
                for (k, _) in txn.scan_prefix(MANUAL, group.id.as_bytes())? {
                    if let Some(subject) = crate::directory::layout::uuid_at(&k, 16) {
                        this.record_membership(
                            txn,
                            now,
                            &actor,
                            &group.id,
                            &subject,
                            None,
                            Some(Source::Manual),
                            &format!("copied from group {id}"),
                        )?;
                    }
                }
                let count = txn.scan_prefix(MEMBERS, group.id.as_bytes())?.len() as u64;
                let mut status = apply::load_status(txn, &group.id)?;
                status.member_count = count;
                txn.put_json(STATUS, group.id.as_bytes(), &status)?;
            }
            this.view(&*txn, group)
        })
        .await
    }
}
