//! The subjects a run evaluates, loaded once: users and devices with their
//! bindings. A subject is either *affected* (its memberships are decided by
//! the run) or *context* (loaded only so that an affected subject's
//! cross-subject conditions can look at it).

use std::collections::{BTreeSet, HashMap};

use cohort_storage::{Entry, Keyspace, StorageError, Store, WriteTxn};
use uuid::Uuid;

use crate::directory::keys::{self, DEVICE_USERS, DEVICES, USER_DEVICES, USERS};
use crate::directory::{AttrValue, Device, Subject, SubjectKind, User, UserState};
use crate::error::DomainError;

/// Reads for the engine, inside a write transaction or from the store.
pub trait Reader {
    /// One key.
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// All keys under a prefix (for bounded sets).
    fn scan(&self, ks: Keyspace, prefix: &[u8]) -> Result<Vec<Entry>, StorageError>;

    /// Walks the keys under a prefix in order without collecting them.
    fn for_each(
        &self,
        ks: Keyspace,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), DomainError>,
    ) -> Result<(), DomainError>;

    /// One JSON value.
    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        ks: Keyspace,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        self.get(ks, key)?
            .map(|b| cohort_storage::decode_json(ks, &b))
            .transpose()
    }
}

impl Reader for WriteTxn<'_> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        WriteTxn::get(self, ks, key)
    }
    fn scan(&self, ks: Keyspace, prefix: &[u8]) -> Result<Vec<Entry>, StorageError> {
        self.scan_prefix(ks, prefix)
    }
    fn for_each(
        &self,
        ks: Keyspace,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), DomainError>,
    ) -> Result<(), DomainError> {
        self.for_each_prefix(ks, prefix, f)
    }
}

impl Reader for Store {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Store::get(self, ks, key)
    }
    fn scan(&self, ks: Keyspace, prefix: &[u8]) -> Result<Vec<Entry>, StorageError> {
        Store::scan(self, ks, prefix, None, false).collect()
    }
    fn for_each(
        &self,
        ks: Keyspace,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), DomainError>,
    ) -> Result<(), DomainError> {
        for entry in Store::scan(self, ks, prefix, None, false) {
            let (k, v) = entry?;
            f(&k, &v)?;
        }
        Ok(())
    }
}

/// A loaded user or device.
pub enum Loaded {
    /// A user.
    User(Box<User>),
    /// A device.
    Device(Box<Device>),
}

impl Loaded {
    /// Its id.
    pub fn id(&self) -> Uuid {
        match self {
            Loaded::User(u) => u.id,
            Loaded::Device(d) => d.id,
        }
    }

    /// A user's state; `None` for devices.
    pub fn state(&self) -> Option<UserState> {
        match self {
            Loaded::User(u) => Some(u.state),
            Loaded::Device(_) => None,
        }
    }

    /// An attribute's value.
    pub fn attribute(&self, name: &str) -> Option<AttrValue> {
        match self {
            Loaded::User(u) => u.attribute(name),
            Loaded::Device(d) => d.attribute(name),
        }
    }
}

/// The subjects of one kind.
#[derive(Default)]
pub struct Side {
    /// The subjects.
    pub subjects: Vec<Loaded>,
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
    fn push(&mut self, s: Loaded, affected: bool) {
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

    /// Every user and device, all affected, with bindings when `bindings`.
    pub fn everything(r: &impl Reader, bindings: bool) -> Result<Universe, DomainError> {
        let mut u = Universe {
            users: Side::default(),
            devices: Side::default(),
        };
        r.for_each(USERS, b"", &mut |_, v| {
            let user: User = cohort_storage::decode_json(USERS, v)?;
            u.users.push(Loaded::User(Box::new(user)), true);
            Ok(())
        })?;
        r.for_each(DEVICES, b"", &mut |_, v| {
            let device: Device = cohort_storage::decode_json(DEVICES, v)?;
            u.devices.push(Loaded::Device(Box::new(device)), true);
            Ok(())
        })?;
        u.users.complete = true;
        u.devices.complete = true;
        u.users.related = vec![Vec::new(); u.users.subjects.len()];
        u.devices.related = vec![Vec::new(); u.devices.subjects.len()];
        if bindings {
            let (users, devices) = (&mut u.users, &mut u.devices);
            r.for_each(USER_DEVICES, b"", &mut |k, _| {
                if let (Some(user), Some(device)) = (keys::uuid_at(k, 0), keys::uuid_at(k, 16))
                    && let (Some(&ui), Some(&di)) =
                        (users.index.get(&user), devices.index.get(&device))
                {
                    users.related[ui].push(di);
                    devices.related[di].push(ui);
                }
                Ok(())
            })?;
        }
        Ok(u)
    }

    /// The given subjects, plus what cross-subject conditions make depend on
    /// them. `user_rules_test_devices`: some user rule has a `devices`
    /// condition, so a device's change matters to its users (and the other
    /// way round for `device_rules_test_users`).
    pub fn around(
        r: &impl Reader,
        users: &BTreeSet<Uuid>,
        devices: &BTreeSet<Uuid>,
        user_rules_test_devices: bool,
        device_rules_test_users: bool,
    ) -> Result<Universe, DomainError> {
        let mut au = users.clone();
        let mut ad = devices.clone();
        let mut links: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        let mut related_of = |id: Uuid, ks: Keyspace| -> Result<Vec<Uuid>, DomainError> {
            if let Some(v) = links.get(&id) {
                return Ok(v.clone());
            }
            let v: Vec<Uuid> = r
                .scan(ks, &keys::id(&id))?
                .iter()
                .filter_map(|(k, _)| keys::uuid_at(k, 16))
                .collect();
            links.insert(id, v.clone());
            Ok(v)
        };
        // Close the affected sets over bindings, in the directions rules look.
        loop {
            let mut grew = false;
            if device_rules_test_users {
                for u in au.clone() {
                    for d in related_of(u, USER_DEVICES)? {
                        grew |= ad.insert(d);
                    }
                }
            }
            if user_rules_test_devices {
                for d in ad.clone() {
                    for u in related_of(d, DEVICE_USERS)? {
                        grew |= au.insert(u);
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
                    related_of(*u, USER_DEVICES)?
                        .into_iter()
                        .filter(|d| !ad.contains(d)),
                );
            }
        }
        if device_rules_test_users {
            for d in &ad {
                cu.extend(
                    related_of(*d, DEVICE_USERS)?
                        .into_iter()
                        .filter(|u| !au.contains(u)),
                );
            }
        }
        let mut uni = Universe {
            users: Side::default(),
            devices: Side::default(),
        };
        for (set, affected) in [(&au, true), (&cu, false)] {
            for id in set {
                if let Some(user) = r.get_json::<User>(USERS, &keys::id(id))? {
                    uni.users.push(Loaded::User(Box::new(user)), affected);
                }
            }
        }
        for (set, affected) in [(&ad, true), (&cd, false)] {
            for id in set {
                if let Some(device) = r.get_json::<Device>(DEVICES, &keys::id(id))? {
                    uni.devices.push(Loaded::Device(Box::new(device)), affected);
                }
            }
        }
        uni.users.related = vec![Vec::new(); uni.users.subjects.len()];
        uni.devices.related = vec![Vec::new(); uni.devices.subjects.len()];
        if user_rules_test_devices || device_rules_test_users {
            for ui in 0..uni.users.subjects.len() {
                let uid = uni.users.subjects[ui].id();
                for d in related_of(uid, USER_DEVICES)? {
                    if let Some(&di) = uni.devices.index.get(&d) {
                        uni.users.related[ui].push(di);
                        uni.devices.related[di].push(ui);
                    }
                }
            }
        }
        Ok(uni)
    }
}
