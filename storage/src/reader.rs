//! One way to read, whether inside a write transaction or from the store.
//!
//! A domain module's read functions take `&impl Reader`, so that a caller in
//! the middle of a transaction reads through that transaction (and sees its
//! own writes, and conflicts with concurrent writers), while a caller that
//! only reads passes the [`Store`]. Without this, each module would need two
//! copies of every read, or callers would reach into other modules' keys.

use crate::{Entry, Keyspace, StorageError, Store, WriteTxn};

/// Reads from a transaction's view or from the committed store.
pub trait Reader {
    /// One key.
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// All entries under a prefix, in key order. Meant for bounded sets (a
    /// user's devices); walk whole tables with [`Reader::for_each`].
    fn scan(&self, ks: Keyspace, prefix: &[u8]) -> Result<Vec<Entry>, StorageError>;

    /// Walks the entries under a prefix in key order without collecting them.
    fn for_each<E: From<StorageError>>(
        &self,
        ks: Keyspace,
        prefix: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E>;

    /// Whether a key is present.
    fn contains(&self, ks: Keyspace, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self.get(ks, key)?.is_some())
    }

    /// One JSON value.
    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        ks: Keyspace,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        self.get(ks, key)?
            .map(|b| crate::decode_json(ks, &b))
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
    fn for_each<E: From<StorageError>>(
        &self,
        ks: Keyspace,
        prefix: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
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
    fn for_each<E: From<StorageError>>(
        &self,
        ks: Keyspace,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        for entry in Store::scan(self, ks, prefix, None, false) {
            let (k, v) = entry?;
            f(&k, &v)?;
        }
        Ok(())
    }
}
