//! The text encodings plugins need on the wire: percent-encoding for URLs and
//! form bodies, base64 for `Authorization: Basic` and base64url for signed
//! tokens (JWS).
//!
//! They live here, once, so that every plugin encodes the same way and none
//! carries its own hand-written alphabet: a wrong table entry in a plugin's
//! copy shows up only against the one vendor that sends that byte. The work is
//! done by the `percent-encoding` and `base64` crates, which build for the
//! wasm guest as they are.

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986's unreserved characters (§2.3). Those are the only
/// bytes that mean the same in a path segment, a query value and a form field,
/// so encoding all the others makes one function safe in each place. A space
/// becomes `%20`, never `+`, which every form decoder also accepts.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode `s` as one URL component (a query value, a path segment or
/// a form field), UTF-8 first and upper-case hex, as RFC 3986 §2.1 prefers.
pub fn url_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// An `application/x-www-form-urlencoded` body from `pairs`, in order, each
/// name and value encoded with [`url_component`].
pub fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", url_component(k), url_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Standard base64 with padding (RFC 4648 §4), as `Authorization: Basic`
/// takes it.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Base64url without padding (RFC 4648 §5), as the parts of a JWS are
/// written (RFC 7515 §2).
pub fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 §10's test vectors.
    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    /// The same vectors without padding, and the two characters where the
    /// alphabets differ: 62 and 63 are `+` `/` in base64, `-` `_` in base64url.
    #[test]
    fn base64url_uses_the_url_alphabet_and_no_padding() {
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn url_component_leaves_only_unreserved_characters() {
        assert_eq!(url_component("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(
            url_component("a b+c&d=e/f?g#h%i"),
            "a%20b%2Bc%26d%3De%2Ff%3Fg%23h%25i"
        );
        // Non-ASCII is encoded as its UTF-8 bytes.
        assert_eq!(url_component("é"), "%C3%A9");
        assert_eq!(
            url_component(r#"profile.login eq "a@b""#),
            "profile.login%20eq%20%22a%40b%22"
        );
    }

    #[test]
    fn form_body_joins_encoded_pairs_in_order() {
        assert_eq!(
            form_urlencoded(&[("grant_type", "client_credentials"), ("scope", "a b&c")]),
            "grant_type=client_credentials&scope=a%20b%26c"
        );
        assert_eq!(form_urlencoded(&[]), "");
    }
}
