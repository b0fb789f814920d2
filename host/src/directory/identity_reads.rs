//! The index reads a user's write makes for its identity, named once so
//! that they can be fetched ahead of the transaction.

use cohort_storage::{Keyspace, WriteTxn};

use super::layout::{self, USERS_BY_EMAIL, USERS_BY_USERNAME};
use crate::error::DomainError;

/// The index entries [`store_user`] reads for a username and an email: the
/// uniqueness keys and the confusable neighbours. Named once, so that a
/// caller can have them fetched before its transaction (see
/// [`cohort_storage::Store::prefetch`]) exactly as the transaction reads them.
pub(crate) struct IdentityReads {
    keys: [(Keyspace, Vec<u8>); 2],
    prefixes: [(Keyspace, Vec<u8>); 2],
}

impl IdentityReads {
    pub(super) fn of(username: &str, email: &str) -> Self {
        IdentityReads {
            keys: [
                (USERS_BY_USERNAME, layout::username(username)),
                (USERS_BY_EMAIL, layout::email(email)),
            ],
            prefixes: [
                super::confusables::neighbours("username", username),
                super::confusables::neighbours("email", email),
            ],
        }
    }

    #[allow(clippy::type_complexity)] // Borrowed views of the two arrays.
    fn borrowed(&self) -> ([(Keyspace, &[u8]); 2], [(Keyspace, &[u8]); 2]) {
        fn view((ks, k): &(Keyspace, Vec<u8>)) -> (Keyspace, &[u8]) {
            (*ks, k.as_slice())
        }
        (
            self.keys.each_ref().map(view),
            self.prefixes.each_ref().map(view),
        )
    }

    /// Fetches a new user's identity reads before its transaction: off the
    /// writer lock, on an engine whose every read is a round trip and which
    /// keeps what it reads (PostgreSQL under the lease). Not for input that
    /// validation is about to refuse (the skeletons of a megabyte of text
    /// are work for nothing). A hint, so a failure is the transaction's to
    /// report, not this.
    pub(super) fn prefetch_ahead(store: &cohort_storage::Store, username: &str, email: &str) {
        if !store.is_shared()
            || username.len() > 4 * super::identity::MAX_USERNAME_CHARS
            || email.len() > super::identity::MAX_EMAIL_BYTES
        {
            return;
        }
        let reads = IdentityReads::of(username, email);
        let (keys, prefixes) = reads.borrowed();
        if let Err(e) = store.prefetch(&keys, &prefixes) {
            tracing::debug!(error = %e, "prefetching a user's identity reads failed");
        }
    }

    /// The confusable-neighbour prefixes of the username and the email,
    /// for [`super::confusables::check_and_index`].
    pub(super) fn neighbours(&self) -> [&[u8]; 2] {
        [&self.prefixes[0].1, &self.prefixes[1].1]
    }

    pub(super) fn prefetch_in(&self, txn: &WriteTxn<'_>) -> Result<(), DomainError> {
        let (keys, prefixes) = self.borrowed();
        Ok(txn.prefetch(&keys, &prefixes)?)
    }
}
