//! Exemptions lapse at their expiry, not at the next decision about their
//! subject.
//!
//! An exemption's `expires_at` only says when it stops applying; without
//! this, a member kept in by an `always` exemption would stay until the
//! subject changed or the nightly recompute ran. Each server keeps, in
//! memory, the next time an exemption lapses; the scheduler asks
//! [`Groups::apply_lapsed_exemptions`] on every tick, which is a comparison
//! with the clock until that time has come, and then re-decides the
//! subjects whose exemptions lapsed, audited like any other membership
//! change. What lapsed while the server was down is the start-up full
//! recompute's, so the window starts when the service opens.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Groups;
use super::layout::EXEMPTIONS;
use super::model::Exemption;
use crate::auth::Actor;
use crate::error::DomainError;
use cohort_storage::Reader;

/// What the scheduler knows about lapses.
#[derive(Debug)]
pub(super) struct Lapses {
    /// Exemptions that lapsed at or before this were re-decided.
    since: DateTime<Utc>,
    /// The earliest expiry after `since`, if any exemption has one.
    next: Option<DateTime<Utc>>,
}

impl Lapses {
    /// Lapses as of `now`, for a store whose next expiry is `next`.
    pub(super) fn at(now: DateTime<Utc>, next: Option<DateTime<Utc>>) -> Lapses {
        Lapses { since: now, next }
    }
}

/// The exemptions that lapsed in `(since, now]`, by group, and the earliest
/// expiry after `now`.
type Due = (BTreeMap<Uuid, BTreeSet<Uuid>>, Option<DateTime<Utc>>);

/// Walks every exemption once.
pub(super) fn due(
    r: &impl Reader,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Due, DomainError> {
    let mut lapsed: BTreeMap<Uuid, BTreeSet<Uuid>> = BTreeMap::new();
    let mut next: Option<DateTime<Utc>> = None;
    r.for_each(EXEMPTIONS, b"", |key, value| {
        let e: Exemption = cohort_storage::decode_json(EXEMPTIONS, value)?;
        let Some(at) = e.expires_at else {
            return Ok::<_, DomainError>(());
        };
        if at > now {
            next = Some(next.map_or(at, |n| n.min(at)));
        } else if at > since {
            let (group, _) = crate::id_pair::split(key)
                .ok_or_else(|| DomainError::Internal("malformed exemption key".into()))?;
            lapsed.entry(group).or_default().insert(e.subject_id);
        }
        Ok(())
    })?;
    Ok((lapsed, next))
}

impl Groups {
    /// Notes an exemption just set, so that the scheduler wakes for its
    /// expiry.
    pub(super) fn note_expiry(&self, at: Option<DateTime<Utc>>) {
        if let Some(at) = at {
            let mut l = self.inner.lapses.lock();
            l.next = Some(l.next.map_or(at, |n| n.min(at)));
        }
    }

    /// When the next exemption lapses, if one will.
    pub fn next_lapse(&self) -> Option<DateTime<Utc>> {
        self.inner.lapses.lock().next
    }

    /// Re-decides the subjects whose exemptions lapsed since the last call
    /// (by the server's clock), in one transaction; returns how many
    /// exemptions lapsed. Before the next expiry, it only reads the clock.
    pub async fn apply_lapsed_exemptions(&self) -> Result<usize, DomainError> {
        let now = self.now();
        if self
            .inner
            .lapses_stale
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            // Another host wrote: it may have set an exemption that lapses
            // before the one this host knows of.
            let since = self.inner.lapses.lock().since;
            let (_, next) = due(self.store(), since, now)?;
            self.note_expiry(next);
        }
        let since = {
            let l = self.inner.lapses.lock();
            match l.next {
                Some(next) if next <= now => l.since,
                _ => return Ok(0),
            }
        };
        let actor = Actor::system("exemption-expiry");
        let (lapsed, next) = self
            .write(move |this, txn| {
                let (due, next) = due(&*txn, since, now)?;
                let mut lapsed = 0;
                for (group, subjects) in due {
                    // A group deleted since keeps no exemptions worth deciding.
                    let Some(g) = super::read::group(&*txn, &group)? else {
                        continue;
                    };
                    lapsed += subjects.len();
                    this.reevaluate(
                        txn,
                        &actor,
                        now,
                        g.subject,
                        subjects,
                        &format!("exemption lapsed on group {group}"),
                    )?;
                }
                Ok((lapsed, next))
            })
            .await?;
        let mut l = self.inner.lapses.lock();
        l.since = now;
        // An expiry still ahead was noted by an exemption set meanwhile.
        let noted = l.next.filter(|t| *t > now);
        l.next = noted.into_iter().chain(next).min();
        if lapsed > 0 {
            tracing::info!(
                lapsed,
                "exemptions lapsed; their subjects were decided again"
            );
        }
        Ok(lapsed)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::groups::layout::pair;
    use crate::groups::model::ExemptionKind;

    fn exemption(subject: Uuid, expires_at: Option<DateTime<Utc>>) -> Exemption {
        Exemption {
            subject_id: subject,
            kind: ExemptionKind::Never,
            reason: None,
            expires_at,
            created_by: "test".into(),
            created_at: Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn due_takes_the_window_and_finds_the_next_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::test_support::open_store(dir.path());
        store.migrate(crate::migrations::MIGRATIONS).unwrap();
        let t = |h: u32| Utc.with_ymd_and_hms(2030, 1, 1, h, 0, 0).unwrap();
        let (g1, g2) = (Uuid::now_v7(), Uuid::now_v7());
        let [a, b, c, d, e] = [(); 5].map(|()| Uuid::now_v7());
        let _written = store
            .write(|txn| {
                for (g, s, at) in [
                    (g1, a, Some(t(1))), // before the window
                    (g1, b, Some(t(3))), // in it
                    (g2, c, Some(t(4))), // at its end: lapsed
                    (g2, d, Some(t(6))), // after: the next
                    (g1, e, None),       // never lapses
                ] {
                    txn.put_json(EXEMPTIONS, &pair(&g, &s), &exemption(s, at))?;
                }
                Ok::<_, cohort_storage::StorageError>(())
            })
            .unwrap();
        let (lapsed, next) = due(&store, t(2), t(4)).unwrap();
        assert_eq!(
            lapsed,
            BTreeMap::from([(g1, BTreeSet::from([b])), (g2, BTreeSet::from([c]))])
        );
        assert_eq!(next, Some(t(6)));
        let (lapsed, next) = due(&store, t(6), t(7)).unwrap();
        assert!(lapsed.is_empty());
        assert_eq!(next, None);
    }
}
