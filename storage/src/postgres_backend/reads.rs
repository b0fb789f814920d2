//! Reads that are more than one key: ranges a page at a time, and the
//! prefetch of several keys and ranges in one statement.

use std::collections::{HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::Mutex;

use super::PAGE;
use super::pool::{Conn, Pool};
use crate::StorageError;
use crate::lease_cache::{LeaseCache, Ticket};

/// A range read a page at a time, so that scanning a large directory holds
/// one page in memory, not the directory.
pub(super) struct Pages {
    pub(super) pool: Arc<Pool>,
    pub(super) start: Bound<Vec<u8>>,
    pub(super) end: Bound<Vec<u8>>,
    pub(super) reverse: bool,
    pub(super) buffered: VecDeque<crate::Entry>,
    pub(super) done: bool,
    /// Where to keep the range if it fits in its first page.
    pub(super) keep: Option<(Arc<Mutex<LeaseCache>>, Ticket, Vec<u8>)>,
}

impl Pages {
    pub(super) fn fetch(&mut self) -> Result<(), StorageError> {
        let mut sql = String::from("SELECT k, v FROM cohort_kv WHERE true");
        let mut params: Vec<Vec<u8>> = Vec::new();
        for (bound, lower) in [(&self.start, true), (&self.end, false)] {
            let op = match (bound, lower) {
                (Bound::Included(_), true) => ">=",
                (Bound::Excluded(_), true) => ">",
                (Bound::Included(_), false) => "<=",
                (Bound::Excluded(_), false) => "<",
                (Bound::Unbounded, _) => continue,
            };
            if let Bound::Included(k) | Bound::Excluded(k) = bound {
                params.push(k.clone());
                sql.push_str(&format!(" AND k {op} ${}", params.len()));
            }
        }
        sql.push_str(if self.reverse {
            " ORDER BY k DESC"
        } else {
            " ORDER BY k"
        });
        sql.push_str(&format!(" LIMIT {PAGE}"));
        let rows: Vec<crate::Entry> = self.pool.run(true, move |conn| {
            let s = conn.statement(&sql)?;
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| p as &(dyn postgres::types::ToSql + Sync))
                .collect();
            Ok(conn
                .client()?
                .query(&s, &refs)?
                .into_iter()
                .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)))
                .collect())
        })?;
        if (rows.len() as i64) < PAGE {
            self.done = true;
            if let Some((cache, ticket, prefix)) = self.keep.take() {
                let mut whole = rows.clone();
                if self.reverse {
                    whole.reverse();
                }
                cache.lock().put_range(ticket, prefix, whole);
            }
        }
        self.keep = None;
        if let Some((last, _)) = rows.last() {
            // The next page starts after the last key seen, in the
            // direction of travel.
            if self.reverse {
                self.end = Bound::Excluded(last.clone());
            } else {
                self.start = Bound::Excluded(last.clone());
            }
        }
        self.buffered.extend(rows);
        Ok(())
    }
}

impl Iterator for Pages {
    type Item = Result<crate::Entry, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffered.is_empty()
            && !self.done
            && let Err(e) = self.fetch()
        {
            self.done = true;
            return Some(Err(e));
        }
        self.buffered.pop_front().map(Ok)
    }
}

/// The prefix whose whole range `start..end` is, if it is one (what
/// `Store::scan` asks for without a cursor): only those are cached, because
/// a write finds the ones it falls in by its own prefixes.
pub(super) fn prefix_of<'a>(start: &'a Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> Option<&'a [u8]> {
    let Bound::Included(lo) = start else {
        return None;
    };
    let hi = crate::keyspace::prefix_successor(lo)?;
    matches!(end, Bound::Excluded(e) if *e == hi).then_some(lo.as_slice())
}

/// Point reads and whole prefix ranges, one statement for all of them.
/// A range that fills its page is not whole, and not returned.
#[allow(clippy::type_complexity)] // Two lists of what was asked, with answers.
pub(super) fn prefetch_on(
    conn: &mut Conn,
    keys: Vec<Vec<u8>>,
    prefixes: Vec<Vec<u8>>,
) -> Result<
    (
        Vec<(Vec<u8>, Option<Vec<u8>>)>,
        Vec<(Vec<u8>, Vec<crate::Entry>)>,
    ),
    postgres::Error,
> {
    let mut sql =
        String::from("SELECT 0::int AS q, k, v FROM cohort_kv WHERE k = ANY($1::bytea[])");
    let mut bounds: Vec<Vec<u8>> = Vec::new();
    for (i, p) in prefixes.iter().enumerate() {
        let hi = crate::keyspace::prefix_successor(p).unwrap_or_default();
        bounds.push(p.clone());
        bounds.push(hi);
        sql.push_str(&format!(
            " UNION ALL (SELECT {}, k, v FROM cohort_kv WHERE k >= ${} AND k < ${} ORDER BY k LIMIT {PAGE})",
            i + 1,
            bounds.len(),
            bounds.len() + 1
        ));
    }
    let s = conn.statement(&sql)?;
    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&keys];
    params.extend(
        bounds
            .iter()
            .map(|b| b as &(dyn postgres::types::ToSql + Sync)),
    );
    let rows = conn.client()?.query(&s, &params)?;
    let mut found: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut ranges: Vec<Vec<crate::Entry>> = vec![Vec::new(); prefixes.len()];
    for row in rows {
        let q: i32 = row.get(0);
        let (k, v): (Vec<u8>, Vec<u8>) = (row.get(1), row.get(2));
        match usize::try_from(q) {
            Ok(0) => {
                found.insert(k, v);
            }
            Ok(i) if i <= ranges.len() => ranges[i - 1].push((k, v)),
            _ => {}
        }
    }
    let points = keys
        .into_iter()
        .map(|k| {
            // `get`, not `remove`: a key asked twice is present twice.
            let v = found.get(&k).cloned();
            (k, v)
        })
        .collect();
    let ranges = prefixes
        .into_iter()
        .zip(ranges)
        .filter(|(_, r)| (r.len() as i64) < PAGE)
        .collect();
    Ok((points, ranges))
}
