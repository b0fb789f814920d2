//! Same-script look-alikes: `admın` (dotless ı), `ɑdmin` (Latin alpha) or
//! `ǀogin` (a click letter for `l`) beside `admin` and `login`. They are
//! one script, so the single-script rule of [`super::identity`] lets them
//! through, and they are different text, so their identity keys differ.
//! UTS #39's confusable *skeleton* maps each to the string it looks like;
//! a new username or email whose skeleton is that of a *different*
//! identity already in the directory is refused with `confusable`.
//!
//! The skeletons live in one index, written in the same transaction as the
//! user (create, update, delete) and built for existing data by migration
//! 5. Pairs stored before it are left alone (neither is renamed or
//! blocked): the check runs only when a user's identity key changes.
//!
//! The skeleton is taken of the identity key, so case and width are folded
//! first; an email's domain is compared in its Unicode form. UTS #39 also
//! folds `1`/`l`/`I` and `rn`/`m`, so `user1` beside `userl` is refused
//! too: two people told apart by that alone are two people a reader
//! confuses.

use cohort_storage::{Keyspace, StorageError, WriteTxn};
use uuid::Uuid;

use super::layout::{self, USERS};
use crate::error::DomainError;

/// field ++ 0 ++ skeleton ++ 0 ++ user id → the user's identity key.
pub const USERS_BY_SKELETON: Keyspace = Keyspace::new("users_by_skeleton");

/// The two identity fields, with the function that gives each its key.
type KeyFn = fn(&str) -> Vec<u8>;
const FIELDS: [(&str, KeyFn); 2] = [("username", layout::username), ("email", layout::email)];

fn key_of(field: &str) -> KeyFn {
    if field == "username" {
        layout::username
    } else {
        layout::email
    }
}

/// The UTS #39 skeleton of an identity key.
fn skeleton(field: &str, key: &str) -> String {
    if field == "email"
        && let Some((local, domain)) = key.rsplit_once('@')
    {
        let (unicode, _) = idna::domain_to_unicode(domain);
        return format!(
            "{}@{}",
            caseless_skeleton(local),
            caseless_skeleton(&unicode)
        );
    }
    caseless_skeleton(key)
}

/// The skeleton of an already case-folded key, folded again until it stops
/// changing. UTS #39 maps to prototypes of either case (`0` to capital
/// `O`, `1` to `l`), so a skeleton of folded text can still differ only in
/// case from another: `b0b` gives `bOb`, `bob` gives `bob`. Folding the
/// skeleton makes those meet. Each round only maps towards prototypes, so a
/// few rounds reach the fixed point; the bound is there for safety.
fn caseless_skeleton(s: &str) -> String {
    let mut current: String = unicode_security::skeleton(s).collect();
    for _ in 0..4 {
        let folded = caseless::default_case_fold_str(&current);
        let next: String = unicode_security::skeleton(&folded).collect();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

fn prefix(field: &str, skeleton: &str) -> Vec<u8> {
    layout::join(&[field.as_bytes(), &[0], skeleton.as_bytes(), &[0]])
}

/// The index range [`check_and_index`] reads for `value` of `field`, so
/// that a caller can prefetch it with the other reads of a write.
pub(crate) fn neighbours(field: &str, value: &str) -> (Keyspace, Vec<u8>) {
    (USERS_BY_SKELETON, entry(field, value).0)
}

fn entry(field: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
    let key = key_of(field)(value);
    let skel = skeleton(field, &String::from_utf8_lossy(&key));
    (prefix(field, &skel), key)
}

/// Refuses `after` for `field` when another user's identity looks the
/// same, and indexes it; `before` is the user's value until now. Only a
/// change of identity key is checked, so stored pairs keep working.
/// `near` is [`neighbours`] of `after`, which the caller computed already
/// to prefetch it (the skeleton is the costly part).
pub(crate) fn check_and_index(
    txn: &mut WriteTxn<'_>,
    field: &'static str,
    id: &Uuid,
    before: Option<&str>,
    after: &str,
    near: &[u8],
) -> Result<(), DomainError> {
    let (new_prefix, new_key) = (near.to_vec(), key_of(field)(after));
    let old = before.map(|b| entry(field, b));
    if old.as_ref().is_some_and(|(_, k)| *k == new_key) {
        return Ok(());
    }
    for (k, v) in txn.scan_prefix(USERS_BY_SKELETON, &new_prefix)? {
        let other = layout::uuid_at(&k, new_prefix.len());
        if other != Some(*id) && v != new_key {
            return Err(DomainError::Conflict {
                code: "confusable",
                field: Some(field.into()),
                message: format!(
                    "{after:?} looks like another user's {field} (UTS #39 confusable); choose one that does not"
                ),
            });
        }
    }
    if let Some((old_prefix, _)) = old {
        txn.delete(
            USERS_BY_SKELETON,
            &layout::join(&[&old_prefix, id.as_bytes()]),
        );
    }
    txn.put(
        USERS_BY_SKELETON,
        &layout::join(&[&new_prefix, id.as_bytes()]),
        new_key,
    );
    Ok(())
}

/// Drops a deleted user's entries.
pub(crate) fn unindex(txn: &mut WriteTxn<'_>, id: &Uuid, username: &str, email: &str) {
    for (field, value) in [("username", username), ("email", email)] {
        let (p, _) = entry(field, value);
        txn.delete(USERS_BY_SKELETON, &layout::join(&[&p, id.as_bytes()]));
    }
}

/// Migration step: the index built from the stored users. It reads the two
/// JSON fields alone, so later changes to `User` cannot break it. Existing
/// look-alike pairs are indexed as they are, not refused.
pub(crate) fn build_skeleton_index(txn: &mut WriteTxn<'_>) -> Result<(), StorageError> {
    let mut users = Vec::new();
    txn.for_each_prefix(USERS, b"", |k, v| {
        let user: serde_json::Value = cohort_storage::decode_json(USERS, v)?;
        if let Ok(id) = Uuid::from_slice(k) {
            let field = |name: &str| user[name].as_str().unwrap_or_default().to_string();
            users.push((id, field("username"), field("email")));
        }
        Ok::<_, StorageError>(())
    })?;
    for (id, username, email) in users {
        for ((field, _), value) in FIELDS.iter().zip([username, email]) {
            let (p, key) = entry(field, &value);
            txn.put(USERS_BY_SKELETON, &layout::join(&[&p, id.as_bytes()]), key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uts_39_skeletons_of_same_script_look_alikes() {
        let u = |s: &str| skeleton("username", &String::from_utf8_lossy(&layout::username(s)));
        for look_alike in ["adm\u{131}n", "\u{251}dmin", "ADMIN"] {
            assert_eq!(u(look_alike), u("admin"), "{look_alike}");
        }
        assert_eq!(u("\u{1C0}ogin"), u("login"));
        // Digits whose prototype is a capital letter meet the lower case.
        for (a, b) in [
            ("b0b", "bob"),
            ("user10", "userlO"),
            ("j0", "jo"),
            ("user1", "userl"),
        ] {
            assert_eq!(u(a), u(b), "{a} {b}");
        }
        assert_ne!(u("ann"), u("arm"));
        assert_ne!(u("admin"), u("admit"));
        let e = |s: &str| skeleton("email", &String::from_utf8_lossy(&layout::email(s)));
        assert_eq!(e("adm\u{131}n@example.com"), e("admin@example.com"));
        assert_eq!(e("b0b@example.com"), e("bob@example.com"));
        assert_ne!(e("admin@example.com"), e("admin@example.org"));
    }
}
