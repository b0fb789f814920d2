//! How the engine reads the directory (inside a write transaction or from
//! the store, through one [`Reader`]) and what it holds of a subject once
//! loaded ([`Loaded`]). Both the replica, which keeps subjects in memory,
//! and a run's universe, which is built from the replica, depend on these;
//! neither depends on the other through them.

use cohort_storage::{Entry, Keyspace, StorageError, Store, WriteTxn};
use uuid::Uuid;

use crate::directory::{AttrRef, Device, Subject, User, UserState};
use crate::error::DomainError;

/// A callback over key/value pairs of a scan.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), DomainError> + 'a;

/// Reads for the engine, inside a write transaction or from the store.
pub trait Reader {
    /// One key.
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// All keys under a prefix (for bounded sets).
    fn scan(&self, ks: Keyspace, prefix: &[u8]) -> Result<Vec<Entry>, StorageError>;

    /// Walks the keys under a prefix in order without collecting them.
    fn for_each(&self, ks: Keyspace, prefix: &[u8], f: &mut Visit<'_>) -> Result<(), DomainError>;

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
    fn for_each(&self, ks: Keyspace, prefix: &[u8], f: &mut Visit<'_>) -> Result<(), DomainError> {
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
    fn for_each(&self, ks: Keyspace, prefix: &[u8], f: &mut Visit<'_>) -> Result<(), DomainError> {
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

    /// An attribute's value, borrowed.
    pub fn attribute(&self, name: &str) -> Option<AttrRef<'_>> {
        match self {
            Loaded::User(u) => u.attribute_ref(name),
            Loaded::Device(d) => d.attribute_ref(name),
        }
    }
}

impl crate::expression::Related for Loaded {
    fn attribute(&self, name: &str) -> Option<AttrRef<'_>> {
        Loaded::attribute(self, name)
    }
}
