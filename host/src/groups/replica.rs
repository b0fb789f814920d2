//! The engine's in-memory copy of what rules read and what they produce:
//! every user and device (decoded once), the bindings between them, and
//! every group's members with their source.
//!
//! Why: a full recompute of 100,000 users and 1,000 groups would otherwise
//! read and decode every subject and every membership from the store, which
//! costs several times more than evaluating the rules. The store stays the
//! source of truth: the replica is loaded from it on first use, updated in
//! the same write transactions that change the store (which run one at a
//! time), and thrown away (to be loaded again) when such a transaction does
//! not commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use uuid::Uuid;

use super::layout::{ERRORS, EXEMPTIONS, MANUAL, MEMBERS, SUGGESTIONS};
use super::model::{Membership, Source};
use super::subjects::Loaded;
use crate::directory::SubjectKind;
use crate::directory::read as directory;
use crate::error::DomainError;
use crate::id_pair;
use cohort_storage::Reader;

/// Membership lookups a run needs: the live replica inside a write
/// transaction, or a snapshot of a few groups for previews.
pub trait Memberships {
    /// The membership of `subject` in `group`, if any.
    fn member(&self, group: &Uuid, subject: &Uuid) -> Option<Source>;
    /// All members of `group`.
    fn members_of(&self, group: &Uuid) -> Vec<(Uuid, Source)>;
    /// Calls `f` for every member of `group`, without collecting them.
    fn for_each_member(&self, group: &Uuid, f: &mut dyn FnMut(&Uuid, Source));
    /// Whether `subject` may have a manual membership, an exemption, a
    /// suggestion or an evaluation error in `group`. `false` means it has
    /// none, so a run over a few subjects skips the lookups.
    fn may_have_state(&self, group: &Uuid, subject: &Uuid) -> bool;
    /// Calls `f` for every group where `subject` is a member or may have
    /// state (see [`Memberships::may_have_state`]); perhaps for others too.
    /// A run over a few subjects decides only these groups and those whose
    /// rule matched, instead of looking at every group.
    fn groups_touching(&self, subject: &Uuid, f: &mut dyn FnMut(&Uuid));
    /// The groups `subject` is a member of (for expressions that read
    /// `.groups`).
    fn groups_of(&self, subject: &Uuid) -> Vec<Uuid>;
}

/// See the module documentation.
#[derive(Default)]
pub struct Replica {
    users: HashMap<Uuid, Arc<Loaded>>,
    devices: HashMap<Uuid, Arc<Loaded>>,
    user_devices: HashMap<Uuid, Vec<Uuid>>,
    device_users: HashMap<Uuid, Vec<Uuid>>,
    members: HashMap<Uuid, HashMap<Uuid, Source>>,
    /// `members` inverted: subject → the groups it is a member of.
    groups_of: HashMap<Uuid, HashSet<Uuid>>,
    /// Subject → groups where it has (or had) a manual membership,
    /// exemption, suggestion or error. A superset: entries are added with
    /// every such write and dropped only with the subject.
    specials: HashMap<Uuid, HashSet<Uuid>>,
}

fn link(map: &mut HashMap<Uuid, Vec<Uuid>>, a: Uuid, b: Uuid, on: bool) {
    let list = map.entry(a).or_default();
    list.retain(|x| *x != b);
    if on {
        list.push(b);
    }
    if list.is_empty() {
        map.remove(&a);
    }
}

impl Replica {
    /// Reads everything from the store (or a transaction's view of it).
    pub fn load(r: &impl Reader) -> Result<Replica, DomainError> {
        let mut rep = Replica::default();
        directory::for_each_user(r, |u| {
            rep.users.insert(u.id, Arc::new(Loaded::User(Box::new(u))));
            Ok::<_, DomainError>(())
        })?;
        directory::for_each_device(r, |d| {
            rep.devices
                .insert(d.id, Arc::new(Loaded::Device(Box::new(d))));
            Ok::<_, DomainError>(())
        })?;
        directory::for_each_binding(r, |u, d| {
            rep.user_devices.entry(u).or_default().push(d);
            rep.device_users.entry(d).or_default().push(u);
            Ok::<_, DomainError>(())
        })?;
        r.for_each(MEMBERS, b"", |k, v| {
            if let Some((g, s)) = id_pair::split(k) {
                rep.members
                    .entry(g)
                    .or_default()
                    .insert(s, Membership::decode(v)?.source);
                rep.groups_of.entry(s).or_default().insert(g);
            }
            Ok::<_, DomainError>(())
        })?;
        for ks in [MANUAL, EXEMPTIONS, SUGGESTIONS, ERRORS] {
            r.for_each(ks, b"", |k, _| {
                if let Some((g, s)) = id_pair::split(k) {
                    rep.specials.entry(s).or_default().insert(g);
                }
                Ok::<_, DomainError>(())
            })?;
        }
        tracing::info!(
            users = rep.users.len(),
            devices = rep.devices.len(),
            groups = rep.members.len(),
            "group engine loaded the directory"
        );
        Ok(rep)
    }

    /// Reads one subject again after it changed (or drops it when deleted).
    pub fn refresh(
        &mut self,
        r: &impl Reader,
        kind: SubjectKind,
        id: &Uuid,
    ) -> Result<(), DomainError> {
        match kind {
            SubjectKind::User => match directory::user(r, id)? {
                Some(u) => {
                    self.users.insert(*id, Arc::new(Loaded::User(Box::new(u))));
                }
                None => {
                    self.users.remove(id);
                    self.specials.remove(id);
                    for d in self.user_devices.remove(id).unwrap_or_default() {
                        link(&mut self.device_users, d, *id, false);
                    }
                }
            },
            SubjectKind::Device => match directory::device(r, id)? {
                Some(d) => {
                    self.devices
                        .insert(*id, Arc::new(Loaded::Device(Box::new(d))));
                }
                None => {
                    self.devices.remove(id);
                    self.specials.remove(id);
                    for u in self.device_users.remove(id).unwrap_or_default() {
                        link(&mut self.user_devices, u, *id, false);
                    }
                }
            },
        }
        Ok(())
    }

    /// Reads one binding again after it changed.
    pub fn refresh_binding(
        &mut self,
        r: &impl Reader,
        user: &Uuid,
        device: &Uuid,
    ) -> Result<(), DomainError> {
        let bound = directory::is_bound(r, user, device)?;
        link(&mut self.user_devices, *user, *device, bound);
        link(&mut self.device_users, *device, *user, bound);
        Ok(())
    }

    /// Records a membership change written to the store.
    pub fn set_member(&mut self, group: &Uuid, subject: &Uuid, source: Option<Source>) {
        match source {
            Some(s) => {
                self.members.entry(*group).or_default().insert(*subject, s);
                self.groups_of.entry(*subject).or_default().insert(*group);
            }
            None => {
                if let Some(m) = self.members.get_mut(group) {
                    m.remove(subject);
                }
                self.leave(group, subject);
            }
        }
    }

    fn leave(&mut self, group: &Uuid, subject: &Uuid) {
        if let Some(groups) = self.groups_of.get_mut(subject) {
            groups.remove(group);
            if groups.is_empty() {
                self.groups_of.remove(subject);
            }
        }
    }

    /// Notes that `subject` now has state beside membership in `group`.
    pub fn note_special(&mut self, group: &Uuid, subject: &Uuid) {
        self.specials.entry(*subject).or_default().insert(*group);
    }

    /// Forgets a deleted group's members.
    pub fn drop_group(&mut self, group: &Uuid) {
        for subject in self.members.remove(group).unwrap_or_default().into_keys() {
            self.leave(group, &subject);
        }
    }

    /// One subject.
    pub fn subject(&self, kind: SubjectKind, id: &Uuid) -> Option<&Arc<Loaded>> {
        match kind {
            SubjectKind::User => self.users.get(id),
            SubjectKind::Device => self.devices.get(id),
        }
    }

    /// Every subject of a kind, by id.
    pub fn all(&self, kind: SubjectKind) -> Vec<&Arc<Loaded>> {
        let map = match kind {
            SubjectKind::User => &self.users,
            SubjectKind::Device => &self.devices,
        };
        let mut v: Vec<&Arc<Loaded>> = map.values().collect();
        v.sort_unstable_by_key(|s| s.id());
        v
    }

    /// The subjects bound to `id` (devices of a user, users of a device).
    pub fn related(&self, kind: SubjectKind, id: &Uuid) -> &[Uuid] {
        let map = match kind {
            SubjectKind::User => &self.user_devices,
            SubjectKind::Device => &self.device_users,
        };
        map.get(id).map_or(&[], Vec::as_slice)
    }

    /// Every group with members.
    pub fn group_ids(&self) -> Vec<Uuid> {
        self.members.keys().copied().collect()
    }

    /// A copy of some groups' members, for work done outside the writer lock.
    pub fn snapshot(&self, groups: impl IntoIterator<Item = Uuid>) -> Snapshot {
        Snapshot {
            members: groups
                .into_iter()
                .filter_map(|g| self.members.get(&g).map(|m| (g, m.clone())))
                .collect(),
        }
    }
}

impl Memberships for Replica {
    fn member(&self, group: &Uuid, subject: &Uuid) -> Option<Source> {
        self.members.get(group)?.get(subject).copied()
    }

    fn may_have_state(&self, group: &Uuid, subject: &Uuid) -> bool {
        self.specials
            .get(subject)
            .is_some_and(|g| g.contains(group))
    }

    fn groups_of(&self, subject: &Uuid) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = self
            .groups_of
            .get(subject)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        out.sort_unstable();
        out
    }

    fn groups_touching(&self, subject: &Uuid, f: &mut dyn FnMut(&Uuid)) {
        let member = self.groups_of.get(subject).into_iter().flatten();
        let special = self.specials.get(subject).into_iter().flatten();
        member.chain(special).for_each(f);
    }

    fn for_each_member(&self, group: &Uuid, f: &mut dyn FnMut(&Uuid, Source)) {
        for (s, src) in self.members.get(group).into_iter().flatten() {
            f(s, *src);
        }
    }

    fn members_of(&self, group: &Uuid) -> Vec<(Uuid, Source)> {
        self.members
            .get(group)
            .map(|m| m.iter().map(|(s, src)| (*s, *src)).collect())
            .unwrap_or_default()
    }
}

/// Some groups' members, copied out of the replica.
#[derive(Default)]
pub struct Snapshot {
    members: HashMap<Uuid, HashMap<Uuid, Source>>,
}

impl Memberships for Snapshot {
    fn member(&self, group: &Uuid, subject: &Uuid) -> Option<Source> {
        self.members.get(group)?.get(subject).copied()
    }

    fn may_have_state(&self, _: &Uuid, _: &Uuid) -> bool {
        true
    }

    fn groups_of(&self, subject: &Uuid) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = self
            .members
            .iter()
            .filter(|(_, m)| m.contains_key(subject))
            .map(|(g, _)| *g)
            .collect();
        out.sort_unstable();
        out
    }

    fn groups_touching(&self, _: &Uuid, f: &mut dyn FnMut(&Uuid)) {
        // Any group may have state: all of them.
        self.members.keys().for_each(f);
    }

    fn for_each_member(&self, group: &Uuid, f: &mut dyn FnMut(&Uuid, Source)) {
        for (s, src) in self.members.get(group).into_iter().flatten() {
            f(s, *src);
        }
    }

    fn members_of(&self, group: &Uuid) -> Vec<(Uuid, Source)> {
        self.members
            .get(group)
            .map(|m| m.iter().map(|(s, src)| (*s, *src)).collect())
            .unwrap_or_default()
    }
}
