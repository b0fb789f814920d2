//! The subjects a run evaluates, loaded once: users and devices with their
//! bindings. A subject is either *affected* (its memberships are decided by
//! the run) or *context* (loaded only so that an affected subject's
//! cross-subject conditions can look at it).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use super::replica::Replica;
use super::subjects::Loaded;
use crate::directory::SubjectKind;

/// The subjects of one kind.
#[derive(Default)]
pub struct Side {
    /// The subjects.
    pub subjects: Vec<Arc<Loaded>>,
    /// Id → position.
    pub index: HashMap<Uuid, usize>,
    /// Whether the run decides each subject's memberships.
    pub affected: Vec<bool>,
    /// Positions of each subject's related subjects on the other side.
    pub related: Vec<Vec<usize>>,
    /// Whether every subject of the kind is loaded.
    pub complete: bool,
}

impl Side {
    fn push(&mut self, s: Arc<Loaded>, affected: bool) {
        self.index.insert(s.id(), self.subjects.len());
        self.subjects.push(s);
        self.affected.push(affected);
    }

    /// Number of affected subjects.
    pub fn affected_count(&self) -> usize {
        self.affected.iter().filter(|a| **a).count()
    }
}

/// Users and devices of a run.
pub struct Universe {
    /// Users.
    pub users: Side,
    /// Devices.
    pub devices: Side,
}

impl Universe {
    /// The side of `kind`.
    pub fn side(&self, kind: SubjectKind) -> &Side {
        match kind {
            SubjectKind::User => &self.users,
            SubjectKind::Device => &self.devices,
        }
    }

    fn empty() -> Universe {
        Universe {
            users: Side::default(),
            devices: Side::default(),
        }
    }

    fn link(&mut self, rep: &Replica) {
        self.users.related = vec![Vec::new(); self.users.subjects.len()];
        self.devices.related = vec![Vec::new(); self.devices.subjects.len()];
        for ui in 0..self.users.subjects.len() {
            let uid = self.users.subjects[ui].id();
            for d in rep.related(SubjectKind::User, &uid) {
                if let Some(&di) = self.devices.index.get(d) {
                    self.users.related[ui].push(di);
                    self.devices.related[di].push(ui);
                }
            }
        }
    }

    /// Every user and device, all affected, with their bindings.
    pub fn everything(rep: &Replica) -> Universe {
        let mut u = Universe::empty();
        for s in rep.all(SubjectKind::User) {
            u.users.push(Arc::clone(s), true);
        }
        for s in rep.all(SubjectKind::Device) {
            u.devices.push(Arc::clone(s), true);
        }
        u.users.complete = true;
        u.devices.complete = true;
        u.link(rep);
        u
    }

    /// The given subjects, plus what cross-subject conditions make depend on
    /// them. `user_rules_test_devices`: some user rule has a `devices`
    /// condition, so a device's change matters to its users (and the other
    /// way round for `device_rules_test_users`). Subjects that are only
    /// needed to evaluate those conditions come in as context, not affected.
    pub fn around(
        rep: &Replica,
        users: &BTreeSet<Uuid>,
        devices: &BTreeSet<Uuid>,
        user_rules_test_devices: bool,
        device_rules_test_users: bool,
    ) -> Universe {
        let mut au = users.clone();
        let mut ad = devices.clone();
        // Close the affected sets over bindings, in the directions rules look.
        loop {
            let mut grew = false;
            if device_rules_test_users {
                for u in au.clone() {
                    for d in rep.related(SubjectKind::User, &u) {
                        grew |= ad.insert(*d);
                    }
                }
            }
            if user_rules_test_devices {
                for d in ad.clone() {
                    for u in rep.related(SubjectKind::Device, &d) {
                        grew |= au.insert(*u);
                    }
                }
            }
            if !grew {
                break;
            }
        }
        let mut cu: BTreeSet<Uuid> = BTreeSet::new();
        let mut cd: BTreeSet<Uuid> = BTreeSet::new();
        if user_rules_test_devices {
            for u in &au {
                cd.extend(
                    rep.related(SubjectKind::User, u)
                        .iter()
                        .filter(|d| !ad.contains(d)),
                );
            }
        }
        if device_rules_test_users {
            for d in &ad {
                cu.extend(
                    rep.related(SubjectKind::Device, d)
                        .iter()
                        .filter(|u| !au.contains(u)),
                );
            }
        }
        let mut uni = Universe::empty();
        for (set, affected) in [(&au, true), (&cu, false)] {
            for id in set {
                if let Some(s) = rep.subject(SubjectKind::User, id) {
                    uni.users.push(Arc::clone(s), affected);
                }
            }
        }
        for (set, affected) in [(&ad, true), (&cd, false)] {
            for id in set {
                if let Some(s) = rep.subject(SubjectKind::Device, id) {
                    uni.devices.push(Arc::clone(s), affected);
                }
            }
        }
        uni.link(rep);
        uni
    }
}
