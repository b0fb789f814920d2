//! Keys made of two ids (a group and a member, a user and a device, a
//! resource and a group), which several domains use for their own
//! keyspaces. One codec, so that no module decodes keys by byte offset.

use uuid::Uuid;

/// The key of the pair (`a`, `b`): `a`'s bytes then `b`'s, so a prefix scan
/// on `a` finds every pair that starts with it.
pub fn key(a: &Uuid, b: &Uuid) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(a.as_bytes());
    k[16..].copy_from_slice(b.as_bytes());
    k
}

/// Both ids of a pair key; `None` for a key of any other shape.
pub fn split(key: &[u8]) -> Option<(Uuid, Uuid)> {
    let key: &[u8; 32] = key.try_into().ok()?;
    let (a, b) = key.split_at(16);
    Some((Uuid::from_slice(a).ok()?, Uuid::from_slice(b).ok()?))
}

/// The second id of a pair key, which is what a prefix scan on the first
/// is after.
pub fn second(key: &[u8]) -> Option<Uuid> {
    split(key).map(|(_, b)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_splits_into_its_ids_and_other_shapes_are_refused() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let k = key(&a, &b);
        assert_eq!(split(&k), Some((a, b)));
        assert_eq!(second(&k), Some(b));
        assert_eq!(&k[..16], a.as_bytes());
        assert_eq!(split(&k[..31]), None);
        assert_eq!(split(&[k.as_slice(), &[0]].concat()), None);
    }
}
