//! Keyspaces partition one ordered key space into named tables. They are
//! encoded as a name prefix followed by a zero byte, so every keyspace is one
//! contiguous key range and an atomic batch can span several of them.

/// A named, ordered table of keys. Define them as constants in the domain:
/// `const USERS: Keyspace = Keyspace::new("users");`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Keyspace(&'static str);

impl Keyspace {
    /// Names must be non-empty, must not contain a zero byte and must not
    /// start with `__`; a violation fails the build when used in a `const`.
    pub const fn new(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        assert!(!bytes.is_empty(), "keyspace name must not be empty");
        let mut i = 0;
        while i < bytes.len() {
            assert!(bytes[i] != 0, "keyspace name must not contain a zero byte");
            i += 1;
        }
        assert!(
            !(bytes.len() >= 2 && bytes[0] == b'_' && bytes[1] == b'_'),
            "keyspace names starting with __ are reserved"
        );
        Keyspace(name)
    }

    pub(crate) const fn reserved(name: &'static str) -> Self {
        Keyspace(name)
    }

    /// The keyspace's name, as it appears in backups.
    pub fn name(&self) -> &'static str {
        self.0
    }

    /// The engine key for `key` in this keyspace.
    pub(crate) fn encode(&self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() + 1 + key.len());
        out.extend_from_slice(self.0.as_bytes());
        out.push(0);
        out.extend_from_slice(key);
        out
    }

    /// Strips this keyspace's prefix from an engine key.
    pub(crate) fn strip<'k>(&self, full: &'k [u8]) -> &'k [u8] {
        &full[self.0.len() + 1..]
    }
}

/// Splits an engine key into keyspace name and relative key.
pub(crate) fn split(full: &[u8]) -> Option<(&str, &[u8])> {
    let pos = full.iter().position(|b| *b == 0)?;
    let name = std::str::from_utf8(&full[..pos]).ok()?;
    Some((name, &full[pos + 1..]))
}

/// The smallest key greater than every key that starts with `prefix`, or
/// `None` when no such key exists (the prefix is all 0xFF).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xFF {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_skips_trailing_ff() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xFF, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF]), None);
    }

    #[test]
    fn encode_and_split_round_trip() {
        let ks = Keyspace::new("users");
        let full = ks.encode(b"\x00\x01id");
        assert_eq!(split(&full), Some(("users", &b"\x00\x01id"[..])));
        assert_eq!(ks.strip(&full), b"\x00\x01id");
    }
}
