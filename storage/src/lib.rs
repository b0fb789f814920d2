//! Everything in Cohort that touches the disk goes through this crate.
//!
//! The domain (users, devices, groups, audit) sees an ordered key-value store
//! split into named keyspaces, with serializable write transactions whose
//! results are durable before they are acknowledged. It never sees an engine
//! type (fjall, the default, or sled): the engine sits behind the crate-private [`backend::Backend`] trait,
//! so a second engine (PostgreSQL for multi-host deployments) can be added
//! here without the domain changing.
//!
//! Three promises the rest of Cohort builds on:
//! - **Atomicity**: everything a [`WriteTxn`] writes lands together or not at
//!   all, also across a crash (a change and its audit event, a membership
//!   delta).
//! - **Durability**: [`Committed::durable`] resolves only once the write has
//!   been flushed to stable storage. Concurrent writers share one flush (group
//!   commit), which is what makes durable writes cheap.
//! - **Serializability**: write transactions run one at a time, so a
//!   uniqueness check and the write it guards cannot interleave with another
//!   writer. Reads outside transactions never block.

mod backend;
mod backup;
mod durability;
mod error;
mod fjall_backend;
mod keyspace;
mod migrate;
mod pending;
mod reader;
mod sled_backend;
mod store;
mod txn;

pub use backup::{BackupKey, BackupSummary, Verify, restore_into};
pub use error::StorageError;
pub use keyspace::Keyspace;
pub use migrate::Migration;
pub use reader::Reader;
pub use store::{Committed, Engine, LiveSize, OpenOptions, Store};
pub use txn::{WriteTxn, decode_json};

/// A key and its value, as scans return them. The key is relative to the
/// keyspace it was read from.
pub type Entry = (Vec<u8>, Vec<u8>);
