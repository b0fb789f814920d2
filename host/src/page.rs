//! Cursor pagination, shared by every list. A cursor is the last index key a
//! page returned, tagged with the index and order it came from, so that a
//! cursor from one query cannot silently be used for another. Because it
//! points into an index rather than at an offset, concurrent inserts and
//! deletes never make a page skip or repeat an item.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::DomainError;

/// Items per page unless the caller asks otherwise.
pub const DEFAULT_LIMIT: usize = 50;
/// The most items one page may hold.
pub const MAX_LIMIT: usize = 500;

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items, in the requested order.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Where a list starts and how long it is.
#[derive(Clone, Debug)]
pub struct PageRequest {
    /// Items per page, 1..=MAX_LIMIT.
    pub limit: usize,
    /// The opaque cursor of the previous page.
    pub cursor: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

impl PageRequest {
    /// Parses `limit` and `cursor` query values.
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<Self, DomainError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(DomainError::bad_query(
                        "limit",
                        format!("must be an integer from 1 to {MAX_LIMIT}"),
                    ));
                }
            },
        };
        Ok(PageRequest {
            limit,
            cursor: cursor.filter(|c| !c.is_empty()).map(str::to_string),
        })
    }

    /// The index key to resume after, checked against the query's `tag`.
    pub fn resume_key(&self, tag: &str) -> Result<Option<Vec<u8>>, DomainError> {
        let Some(cursor) = &self.cursor else {
            return Ok(None);
        };
        let bad = || {
            DomainError::bad_query(
                "cursor",
                "is not a cursor returned by this list with these sort and filter options",
            )
        };
        let raw = B64.decode(cursor).map_err(|_| bad())?;
        let split = raw.iter().position(|b| *b == 0).ok_or_else(bad)?;
        if &raw[..split] != tag.as_bytes() {
            return Err(bad());
        }
        Ok(Some(raw[split + 1..].to_vec()))
    }
}

/// Encodes the cursor for a page that ended at `key`.
pub fn cursor(tag: &str, key: &[u8]) -> String {
    let mut raw = Vec::with_capacity(tag.len() + 1 + key.len());
    raw.extend_from_slice(tag.as_bytes());
    raw.push(0);
    raw.extend_from_slice(key);
    B64.encode(raw)
}

/// What to do with one index entry during [`collect`].
pub enum Visit<T> {
    /// Put this item on the page.
    Item(T),
    /// Filters reject the entry; keep walking.
    Skip,
    /// The walk has passed the end of the requested range.
    Stop,
}

impl<T> From<Option<T>> for Visit<T> {
    fn from(o: Option<T>) -> Self {
        o.map_or(Visit::Skip, Visit::Item)
    }
}

/// Collects up to `limit` items from an index walk. `resolve` turns an index
/// entry into an item, skips it, or ends the walk.
pub fn collect<T>(
    tag: &str,
    limit: usize,
    entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), cohort_storage::StorageError>>,
    mut resolve: impl FnMut(&[u8], &[u8]) -> Result<Visit<T>, DomainError>,
) -> Result<Page<T>, DomainError> {
    let mut items = Vec::new();
    let mut entries = entries.peekable();
    while let Some(entry) = entries.next() {
        let (key, value) = entry?;
        match resolve(&key, &value)? {
            Visit::Item(item) => {
                items.push(item);
                if items.len() == limit {
                    let more = entries.peek().is_some();
                    return Ok(Page {
                        items,
                        next_cursor: more.then(|| cursor(tag, &key)),
                    });
                }
            }
            Visit::Skip => {}
            Visit::Stop => break,
        }
    }
    Ok(Page {
        items,
        next_cursor: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_other_queries() {
        let c = cursor("users:username:asc", b"alice");
        let req = PageRequest::parse(Some("10"), Some(&c)).unwrap();
        assert_eq!(
            req.resume_key("users:username:asc").unwrap(),
            Some(b"alice".to_vec())
        );
        assert!(req.resume_key("users:email:asc").is_err());
        let garbage = PageRequest::parse(None, Some("!!!")).unwrap();
        assert!(garbage.resume_key("x").is_err());
    }

    #[test]
    fn limit_is_bounded() {
        assert!(PageRequest::parse(Some("0"), None).is_err());
        assert!(PageRequest::parse(Some("501"), None).is_err());
        assert!(PageRequest::parse(Some("ten"), None).is_err());
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn collect_stops_at_limit_and_points_past_the_last_entry() {
        let entries = (0u8..10).map(|i| Ok((vec![i], vec![])));
        let page = collect("t", 3, entries, |k, _| {
            Ok((k[0] % 2 == 0).then_some(k[0]).into())
        })
        .unwrap();
        assert_eq!(page.items, vec![0, 2, 4]);
        let req = PageRequest {
            limit: 3,
            cursor: page.next_cursor,
        };
        assert_eq!(req.resume_key("t").unwrap(), Some(vec![4]));
    }
}
