//! What makes two usernames or two emails the same person: the one
//! normalisation every store, comparison and look-up of an identity goes
//! through (the API, SCIM, imports, just-in-time creation, sign-in matching,
//! the sign-in identifier step and the storage migration that re-keys old
//! data). Two spellings are one identity exactly when their keys here are
//! equal; nothing else folds case on its own.
//!
//! Why not `str::to_lowercase`: it is not a caseless match. It maps
//! different strings onto one (the Kelvin sign U+212A lowers to `k`) while
//! leaving apart strings people cannot tell apart (full-width letters,
//! invisible characters), so a look-alike could take or shadow a real
//! address. The keys below follow the published algorithms instead:
//!
//! - **Usernames**: the key is the PRECIS `UsernameCaseMapped` profile of
//!   RFC 8265 (width mapping, case mapping, NFC, the bidi rule). The stored
//!   value is the same profile without the case mapping
//!   (`UsernameCasePreserved`): what the admin typed, only width-mapped and
//!   NFC-normalised, so `Ada.Lovelace` stays `Ada.Lovelace` while no stored
//!   name holds a code point that a look-up could not reach. On top of
//!   PRECIS, ASCII punctuation is limited to `. _ @ + -` and the first
//!   character must be a letter or digit, as the API always required.
//! - **Emails**: the key is the local part under Unicode's compatibility
//!   caseless match (D146: NFKC and full case folding, invisible characters
//!   dropped as NFKC_Casefold drops them), `@`, and the domain as its IDNA
//!   A-label (UTS #46), so `bücher.de`, `BÜCHER.de` and `xn--bcher-kva.de`
//!   are one domain. The stored value is the NFKC form of the input with
//!   its case kept.
//! - **Refused in both**: invisible and format characters: general category
//!   Cf (zero-width space and joiners, word joiner, BOM, bidi controls) and
//!   every `Default_Ignorable_Code_Point` of Unicode's
//!   DerivedCoreProperties.txt, whatever its category (the combining
//!   grapheme joiner U+034F, variation selectors, Hangul fillers, Mongolian
//!   free variation selectors). These render as nothing, so a name holding
//!   one looks exactly like the name without it; NFKC and case folding keep
//!   most of them, so without this refusal they would make a second,
//!   identical-looking identity. (PRECIS already disallows them in
//!   usernames; the check runs first there too, for one error code.) And
//!   labels that mix scripts (UTS #39 single-script test on the username,
//!   the local part and each domain label, after IDNA decoding so an
//!   `xn--` label cannot hide one). A whole-Cyrillic label is one script and
//!   is allowed: it is a different identity from its Latin look-alike, and
//!   its key differs.

use std::borrow::Cow;

use icu_properties::CodePointSetData;
use icu_properties::props::DefaultIgnorableCodePoint;
use precis_core::profile::PrecisFastInvocation;
use precis_profiles::{UsernameCaseMapped, UsernameCasePreserved};
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use unicode_security::MixedScript;

/// The longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// The longest email in bytes (RFC 5321's path limit less the brackets).
pub const MAX_EMAIL_BYTES: usize = 254;
/// The longest local part in bytes (RFC 5321).
pub const MAX_LOCAL_BYTES: usize = 64;

/// Why a username or email is refused. Each has a stable code for the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The value breaks the syntax (length, `@`, dots, spaces).
    #[error("{0}")]
    Malformed(&'static str),
    /// An invisible or format character (general category Cf, or
    /// `Default_Ignorable_Code_Point`).
    #[error("contains the invisible or format character U+{:04X}", u32::from(*.0))]
    Invisible(char),
    /// A label mixes scripts (UTS #39), e.g. Latin with a Cyrillic `е`.
    #[error("{0:?} mixes scripts (for example Latin with Cyrillic); use one script per name")]
    MixedScript(String),
    /// A character RFC 8265 does not allow in a username (spaces, symbols,
    /// compatibility characters such as the Kelvin sign).
    #[error("contains a character usernames may not hold (RFC 8265): {0}")]
    Disallowed(String),
    /// The domain is not a valid internationalised domain name.
    #[error("the domain is not a valid domain name (IDNA): {0}")]
    Domain(String),
}

impl IdentityError {
    /// The stable code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            // The code the API has always used for a bad username or email.
            IdentityError::Malformed(_) => "invalid_field",
            IdentityError::Invisible(_) => "invisible_character",
            IdentityError::MixedScript(_) => "mixed_script",
            IdentityError::Disallowed(_) => "disallowed_character",
            IdentityError::Domain(_) => "invalid_domain",
        }
    }
}

/// A checked username: what is stored and what is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    /// Stored and shown: the input width-mapped and NFC, case kept.
    pub display: String,
    /// Compared and indexed: `UsernameCaseMapped`.
    pub key: String,
}

/// A checked email: what is stored and what is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// Stored and shown: the input in NFKC, case kept.
    pub display: String,
    /// Compared and indexed: caseless local part `@` A-label domain.
    pub key: String,
}

fn refuse_invisible(s: &str) -> Result<(), IdentityError> {
    match s.chars().find(|c| is_invisible(*c)) {
        Some(c) => Err(IdentityError::Invisible(c)),
        None => Ok(()),
    }
}

/// Format characters, and the code points Unicode says to render as
/// nothing when unsupported. The two sets overlap but neither holds the
/// other: U+0600 ARABIC NUMBER SIGN is Cf and visible-by-default, U+034F
/// COMBINING GRAPHEME JOINER is default-ignorable and Mn.
fn is_invisible(c: char) -> bool {
    c.general_category() == GeneralCategory::Format
        || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
}

fn single_script(label: &str) -> Result<(), IdentityError> {
    if label.is_single_script() {
        Ok(())
    } else {
        Err(IdentityError::MixedScript(label.to_string()))
    }
}

/// Checks a username and gives its stored form and key.
pub fn username(input: &str) -> Result<Username, IdentityError> {
    const SYNTAX: &str = "must be 1-64 characters, start with a letter or digit, and contain only letters, digits and . _ @ + -";
    refuse_invisible(input)?;
    // The API's own ASCII rule first, so ordinary names get the error they
    // always got.
    if input.chars().any(|c| {
        c.is_ascii() && !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '-'))
    }) {
        return Err(IdentityError::Malformed(SYNTAX));
    }
    let display = UsernameCasePreserved::enforce(input).map_err(|e| match e {
        precis_core::Error::Invalid => IdentityError::Malformed(SYNTAX),
        other => IdentityError::Disallowed(other.to_string()),
    })?;
    let mut chars = display.chars();
    let syntax_ok = display.chars().count() <= MAX_USERNAME_CHARS
        && chars.next().is_some_and(char::is_alphanumeric)
        && display.chars().all(|c| {
            !c.is_ascii() || c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '-')
        });
    if !syntax_ok {
        return Err(IdentityError::Malformed(SYNTAX));
    }
    single_script(&display)?;
    let key = UsernameCaseMapped::enforce(display.as_ref())
        .map_err(|e| IdentityError::Disallowed(e.to_string()))?
        .into_owned();
    Ok(Username {
        display: display.into_owned(),
        key,
    })
}

/// The key a look-up by username uses: `None` when `input` cannot be
/// anybody's username (then nobody has it).
pub fn username_key(input: &str) -> Option<String> {
    UsernameCaseMapped::enforce(input.trim())
        .ok()
        .map(Cow::into_owned)
}

/// Checks an email and gives its stored form and key.
pub fn email(input: &str) -> Result<Email, IdentityError> {
    const SYNTAX: &str = "must be a valid email address";
    refuse_invisible(input)?;
    let display: String = input.nfkc().collect();
    // NFKC could in principle compose one; cheap to be sure.
    refuse_invisible(&display)?;
    let Some((local, domain)) = display.split_once('@') else {
        return Err(IdentityError::Malformed(SYNTAX));
    };
    let syntax_ok = display.len() <= MAX_EMAIL_BYTES
        && !local.is_empty()
        && local.len() <= MAX_LOCAL_BYTES
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !display.chars().any(|c| c.is_whitespace() || c.is_control());
    if !syntax_ok {
        return Err(IdentityError::Malformed(SYNTAX));
    }
    single_script(local)?;
    let ascii = idna::domain_to_ascii(domain).map_err(|e| IdentityError::Domain(e.to_string()))?;
    // Scripts are judged on the Unicode form of each label, so an A-label
    // (`xn--…`) cannot smuggle in a mixed one.
    let (unicode, decoded) = idna::domain_to_unicode(&ascii);
    decoded.map_err(|e| IdentityError::Domain(e.to_string()))?;
    for label in unicode.split('.') {
        single_script(label)?;
    }
    let key = format!("{}@{ascii}", caseless_key(local));
    Ok(Email { display, key })
}

/// The key a look-up by email uses. Never fails: stored data from before
/// these rules, and claims from identity providers, still get a key, and
/// one that equals the key of every spelling [`email`] would accept as the
/// same address.
pub fn email_key(input: &str) -> String {
    // Normalised before it is split, as [`email`] does, so that a
    // full-width `＠` (NFKC: `@`) splits where the stored address did.
    let input: String = input
        .trim()
        .chars()
        .filter(|c| !is_invisible(*c))
        .nfkc()
        .collect();
    match input.rsplit_once('@') {
        Some((local, domain)) => {
            let domain = idna::domain_to_ascii(domain).unwrap_or_else(|_| caseless_key(domain));
            format!("{}@{domain}", caseless_key(local))
        }
        None => caseless_key(&input),
    }
}

/// The key of an identifier typed at sign-in or sent as a claim, which may
/// be a username or an email: for throttling, where one bucket must serve
/// every spelling of one person.
pub fn identifier_key(input: &str) -> String {
    if input.contains('@')
        && let Ok(e) = email(input.trim())
    {
        return e.key;
    }
    username_key(input).unwrap_or_else(|| email_key(input))
}

/// The domain of an email in the one form domains are compared in (the
/// A-label), for sign-in routing by domain.
pub fn domain_key(domain: &str) -> String {
    let domain: String = domain.trim().nfkc().collect();
    idna::domain_to_ascii(&domain).unwrap_or_else(|_| caseless_key(&domain))
}

/// Unicode's compatibility caseless match (D146) as a key:
/// NFKC(fold(NFKC(fold(NFD(s))))), without invisible characters (as
/// NFKC_Casefold removes every default-ignorable code point).
fn caseless_key(s: &str) -> String {
    let s: String = s.chars().filter(|c| !is_invisible(*c)).nfd().collect();
    let s = caseless::default_case_fold_str(&s);
    let s: String = s.nfkc().collect();
    let s = caseless::default_case_fold_str(&s);
    s.nfkc().filter(|c| !is_invisible(*c)).collect()
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
