//! Test vectors come from the standards (RFC 8265 §3.5, UTS #39 §5.1,
//! IDNA's well-known `bücher` A-label) and from issue #23, not from this
//! module's own output.

use proptest::prelude::*;

use super::*;

fn key(s: &str) -> String {
    username(s).unwrap().key
}

#[test]
fn rfc_8265_username_examples() {
    // §3.5, the strings the RFC lists as conforming to UsernameCaseMapped.
    assert_eq!(key("juliet@example.com"), "juliet@example.com");
    assert_eq!(key("fussball"), "fussball");
    assert_eq!(key("fu\u{DF}ball"), "fu\u{DF}ball");
    assert_eq!(key("\u{3C0}"), "\u{3C0}");
    // Σ is case-mapped to σ; final ς is not folded (toLowerCase, not
    // case folding), so it stays a different name.
    assert_eq!(key("\u{3A3}"), "\u{3C3}");
    assert_eq!(key("\u{3C3}"), "\u{3C3}");
    assert_eq!(key("\u{3C2}"), "\u{3C2}");
    assert_ne!(key("\u{3C2}"), key("\u{3A3}"));
    // …and those it lists as not conforming.
    assert!(username("foo bar").is_err(), "space");
    assert!(username("").is_err(), "empty");
    assert_eq!(
        username("henry\u{2163}").unwrap_err().code(),
        "disallowed_character",
        "Roman numeral four is a compatibility character"
    );
    assert_eq!(
        username("\u{265A}").unwrap_err().code(),
        "disallowed_character",
        "black chess king is a symbol"
    );
}

#[test]
fn ascii_usernames_keep_their_case_and_old_rules() {
    let u = username("Ada.Lovelace+test@corp").unwrap();
    assert_eq!(u.display, "Ada.Lovelace+test@corp");
    assert_eq!(u.key, "ada.lovelace+test@corp");
    for bad in [".ada", "ada lovelace", "ada!", "a#b", &"a".repeat(65)] {
        assert_eq!(username(bad).unwrap_err().code(), "invalid_field", "{bad}");
    }
}

#[test]
fn the_kelvin_sign_is_not_a_username_letter() {
    // U+212A has a compatibility (singleton) decomposition, which RFC 8264
    // disallows in the IdentifierClass.
    assert_eq!(
        username("\u{212A}ate").unwrap_err().code(),
        "disallowed_character"
    );
    // A look-up by it finds nobody rather than the real `kate`.
    assert_eq!(username_key("\u{212A}ate"), None);
}

#[test]
fn full_width_usernames_are_width_mapped() {
    let u = username("\u{FF2B}\u{FF41}\u{FF54}\u{FF45}").unwrap();
    assert_eq!(u.display, "Kate");
    assert_eq!(u.key, "kate");
}

#[test]
fn uts_39_mixed_script_examples() {
    // §5.1: "Circle" (Latin) and "СігсӀе" (all Cyrillic) are single-script;
    // "Сirсlе" mixes them; a digit is Common and mixes with nothing;
    // Han, Hiragana and Katakana together are one writing system (Jpan).
    assert!(username("Circle").is_ok());
    assert!(username("\u{421}\u{456}\u{433}\u{441}\u{4C0}\u{435}").is_ok());
    assert_eq!(
        username("\u{421}ir\u{441}l\u{435}").unwrap_err().code(),
        "mixed_script"
    );
    assert!(username("Circ1e").is_ok());
    assert!(username("写真だけの結婚式").is_ok());
}

#[test]
fn the_kelvin_email_is_the_same_address() {
    let real = email("kate@example.com").unwrap();
    let kelvin = email("\u{212A}ate@example.com").unwrap();
    assert_eq!(kelvin.key, real.key);
    // Stored in NFKC: the Kelvin sign itself is never kept.
    assert_eq!(kelvin.display, "Kate@example.com");
    assert_eq!(email_key("\u{212A}ATE@EXAMPLE.COM"), "kate@example.com");
}

#[test]
fn invisible_characters_are_refused() {
    for c in [
        '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{202E}', '\u{AD}',
    ] {
        let e = email(&format!("ka{c}te@example.com")).unwrap_err();
        assert_eq!(e, IdentityError::Invisible(c));
        assert_eq!(e.code(), "invisible_character");
        assert_eq!(
            username(&format!("ka{c}te")).unwrap_err().code(),
            "invisible_character"
        );
        // …and a look-up with one reaches the visible address.
        assert_eq!(
            email_key(&format!("ka{c}te@example.com")),
            "kate@example.com"
        );
    }
}

/// Default-ignorable code points outside general category Cf, listed in
/// DerivedCoreProperties.txt (Unicode 16) as `Default_Ignorable_Code_Point`:
/// the combining grapheme joiner (Mn), variation selectors (Mn), Hangul
/// fillers (Lo), Mongolian free variation selectors (Mn).
const IGNORABLE_NOT_CF: [char; 12] = [
    '\u{034F}',
    '\u{FE00}',
    '\u{FE0F}',
    '\u{E0100}',
    '\u{E01EF}',
    '\u{115F}',
    '\u{1160}',
    '\u{3164}',
    '\u{FFA0}',
    '\u{180B}',
    '\u{180D}',
    '\u{180F}',
];

#[test]
fn default_ignorable_characters_of_any_category_are_refused() {
    for c in IGNORABLE_NOT_CF {
        assert_ne!(c.general_category(), GeneralCategory::Format, "{c:?}");
        for addr in [
            format!("kate{c}@example.com"),
            format!("k{c}ate@example.com"),
            format!("kate@exa{c}mple.com"),
        ] {
            let e = email(&addr).unwrap_err();
            assert_eq!(e, IdentityError::Invisible(c), "{addr:?}");
            assert_eq!(e.code(), "invisible_character");
            // A look-up with one reaches the visible address.
            assert_eq!(email_key(&addr), "kate@example.com", "{addr:?}");
        }
        // PRECIS disallows them in usernames anyway; either way the
        // name is refused and `kate` cannot be shadowed.
        assert!(username(&format!("kate{c}")).is_err(), "{c:?}");
    }
    // Visible-by-default format characters are still refused (Cf), and
    // ordinary combining marks are not invisible.
    assert_eq!(
        email("\u{600}@example.com").unwrap_err().code(),
        "invisible_character"
    );
    assert!(email("cafe\u{301}@example.com").is_ok());
}

#[test]
fn a_full_width_at_sign_looks_up_the_same_address() {
    let stored = email("kate@b\u{FC}cher.de").unwrap();
    assert_eq!(email_key("kate\u{FF20}b\u{FC}cher.de"), stored.key);
    assert_eq!(email_key("KATE\u{FF20}B\u{DC}CHER.DE"), stored.key);
    assert_eq!(email("kate\u{FF20}b\u{FC}cher.de").unwrap().key, stored.key);
}

#[test]
fn a_cyrillic_letter_in_the_domain_is_refused() {
    let e = email("kate@\u{435}xample.com").unwrap_err();
    assert_eq!(e.code(), "mixed_script");
    // Also when it comes as an A-label.
    let ace = idna::domain_to_ascii("\u{435}xample.com").unwrap();
    assert!(ace.starts_with("xn--"));
    assert_eq!(
        email(&format!("kate@{ace}")).unwrap_err().code(),
        "mixed_script"
    );
    // In the local part too.
    assert_eq!(
        email("k\u{430}te@example.com").unwrap_err().code(),
        "mixed_script"
    );
    // A label wholly in one script is allowed, and is another address.
    let cyr = email("kate@\u{43F}\u{440}\u{438}\u{43C}\u{435}\u{440}.com").unwrap();
    assert_ne!(cyr.key, email("kate@primer.com").unwrap().key);
}

#[test]
fn domains_compare_as_a_labels() {
    let a = email("Ada@B\u{FC}cher.de").unwrap();
    assert_eq!(a.key, "ada@xn--bcher-kva.de");
    assert_eq!(email("ada@xn--bcher-kva.de").unwrap().key, a.key);
    assert_eq!(email("ADA@B\u{DC}CHER.DE").unwrap().key, a.key);
    assert_eq!(domain_key("B\u{DC}cher.de"), "xn--bcher-kva.de");
}

#[test]
fn full_case_folding_applies_to_local_parts() {
    // Case folding, not lowercasing: ß folds to ss, final sigma to sigma.
    assert_eq!(
        email("STRASSE@example.com").unwrap().key,
        email("stra\u{DF}e@example.com").unwrap().key
    );
    assert_eq!(
        email("\u{3C2}@example.gr").unwrap().key,
        email("\u{3A3}@example.gr").unwrap().key
    );
}

#[test]
fn identifiers_throttle_under_one_key() {
    assert_eq!(
        identifier_key("\u{212A}ate@Example.com"),
        identifier_key("kate@example.com")
    );
    assert_eq!(identifier_key("ADA"), identifier_key("ada"));
}

const HOMOGLYPHS: &[(char, char)] = &[
    ('a', '\u{430}'),
    ('e', '\u{435}'),
    ('o', '\u{43E}'),
    ('p', '\u{440}'),
    ('c', '\u{441}'),
    ('x', '\u{445}'),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every name the API accepted before keeps its spelling and its old
    /// (ASCII-lowercase) key, so existing usernames need no re-keying.
    #[test]
    fn old_usernames_are_unchanged(name in "[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}") {
        let u = username(&name).unwrap();
        prop_assert_eq!(&u.display, &name);
        prop_assert_eq!(u.key, name.to_ascii_lowercase());
    }

    /// ASCII addresses keep the key they had.
    #[test]
    fn ascii_emails_keep_their_key(
        local in "[A-Za-z0-9][A-Za-z0-9._+-]{0,20}",
        domain in "[A-Za-z0-9]{1,12}(\\.[A-Za-z]{2,6}){1,2}",
    ) {
        let addr = format!("{local}@{domain}");
        let e = email(&addr).unwrap();
        prop_assert_eq!(&e.display, &addr);
        prop_assert_eq!(&e.key, &addr.to_ascii_lowercase());
        prop_assert_eq!(email_key(&addr), e.key);
    }

    /// Normalisation is stable: the stored form checks again to itself and
    /// to the same key, and look-ups by either find it.
    #[test]
    fn stored_forms_are_fixed_points(s in "\\PC{1,20}@[\\p{L}\\p{N}]{1,10}\\.[a-z]{2,4}") {
        if let Ok(e) = email(&s) {
            let again = email(&e.display).unwrap();
            prop_assert_eq!(&again.display, &e.display);
            prop_assert_eq!(&again.key, &e.key);
            prop_assert_eq!(email_key(&s), e.key.clone());
            prop_assert!(!e.display.chars().any(is_invisible));
        }
    }

    #[test]
    fn usernames_are_fixed_points(s in "[\\p{L}\\p{N}._-]{1,30}") {
        if let Ok(u) = username(&s) {
            let again = username(&u.display).unwrap();
            prop_assert_eq!(&again.display, &u.display);
            prop_assert_eq!(&again.key, &u.key);
            prop_assert_eq!(username_key(&s), Some(u.key));
        }
    }

    /// An invisible character anywhere in a valid address is refused.
    #[test]
    fn a_hidden_character_is_always_refused(
        local in "[a-z]{1,10}",
        at in 0usize..16,
        c in prop::sample::select(vec!['\u{200B}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{202A}', '\u{2066}']),
    ) {
        let mut addr: Vec<char> = format!("{local}@example.com").chars().collect();
        let at = at.min(addr.len());
        addr.insert(at, c);
        let addr: String = addr.into_iter().collect();
        prop_assert_eq!(email(&addr).unwrap_err(), IdentityError::Invisible(c));
    }

    /// One Cyrillic look-alike among Latin letters makes a label mixed.
    #[test]
    fn one_homoglyph_makes_a_label_mixed(
        word in "[a-z]{2,10}",
        pick in 0usize..6,
        at in 0usize..10,
    ) {
        let (latin, cyrillic) = HOMOGLYPHS[pick];
        let mut chars: Vec<char> = word.chars().collect();
        let at = at % chars.len();
        chars[at] = cyrillic;
        // Keep at least one Latin letter beside it.
        chars.push(latin);
        let label: String = chars.into_iter().collect();
        prop_assert_eq!(username(&label).unwrap_err().code(), "mixed_script");
        prop_assert_eq!(email(&format!("{label}@example.com")).unwrap_err().code(), "mixed_script");
        prop_assert_eq!(email(&format!("kate@{label}.com")).unwrap_err().code(), "mixed_script");
    }
}
