//! Phone-number normalisation: what a person types → an E.164 [`AccountId`].
//!
//! Owns the input bounds and the character rules applied before the `phonenumber` crate sees
//! the text, and the validity check after. Does not own the [`AccountId`] format itself
//! (`crate::ids`).

use std::str::FromStr;

use phonenumber::metadata::DATABASE;
use phonenumber::{country, Mode};

use crate::ids::AccountId;

/// Longest input accepted, in bytes, checked before anything else so that parsing work is
/// bounded. Generous for any real notation ("+49 (0) 151 / 234 567 89" is 25).
pub const MAX_PHONE_INPUT_BYTES: usize = 32;

/// Why a phone number was refused. Every variant but
/// [`UnknownDefaultCountry`](PhoneError::UnknownDefaultCountry) is the client's fault and maps
/// to `ERROR_CODE_INVALID_PHONE_NUMBER`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PhoneError {
    /// The configured default country is not an ISO 3166-1 alpha-2 code. (Operator's fault:
    /// config validation should have caught it.)
    #[error("default country {0:?} is not a known ISO 3166-1 alpha-2 code")]
    UnknownDefaultCountry(String),
    /// Nothing but whitespace. (Client's fault.)
    #[error("phone number is empty")]
    Empty,
    /// Longer than [`MAX_PHONE_INPUT_BYTES`]. (Client's fault.)
    #[error("phone number input is {bytes} bytes, at most {MAX_PHONE_INPUT_BYTES} allowed")]
    TooLong { bytes: usize },
    /// Contains letters. Vanity numbers ("1-800-FLOWERS") and extensions ("x12") are not
    /// accounts. (Client's fault.)
    #[error("phone number contains letters")]
    Letters,
    /// Contains a character that is neither a digit nor common punctuation (`+ - . ( ) /` and
    /// space). (Client's fault.)
    #[error("phone number contains the unexpected character {0:?}")]
    UnexpectedCharacter(char),
    /// `phonenumber` could not read it as a number (e.g. too short, unknown country code).
    /// (Client's fault.)
    /// `reason` is the parser's message, e.g. "the number is too short after IDD".
    #[error("phone number cannot be parsed: {reason}")]
    Unparseable { reason: String },
    /// Parsed, but not a number that can exist under its country's numbering plan.
    /// (Client's fault.)
    #[error("not a valid phone number")]
    Invalid,
}

/// Normalises `input` to E.164, reading numbers without a `+` or international prefix as
/// numbers of `default_country` (ISO 3166-1 alpha-2, any case, e.g. "US", "de").
///
/// Accepts "+1 415-555-0100", "(415) 555 0100" with "US", "0151 23456789" with "DE".
/// Numbers written internationally ("+49 …", "011 49 …" in the US) keep their own country.
/// Surrounding whitespace is ignored, and so is a bracketed trunk prefix after a country code
/// ("+49 (0) 151 …").
pub fn normalise(input: &str, default_country: &str) -> Result<AccountId, PhoneError> {
    if input.len() > MAX_PHONE_INPUT_BYTES {
        return Err(PhoneError::TooLong { bytes: input.len() });
    }
    let country = country::Id::from_str(&default_country.to_ascii_uppercase())
        .map_err(|_| PhoneError::UnknownDefaultCountry(default_country.to_owned()))?;
    let text = input.trim();
    if text.is_empty() {
        return Err(PhoneError::Empty);
    }
    // phonenumber maps letters to keypad digits and reads "ext."/"x" as extensions; neither
    // names an account, so letters are refused here rather than silently reinterpreted.
    if let Some(c) = text.chars().find(|c| !is_allowed(*c)) {
        return Err(if c.is_alphabetic() {
            PhoneError::Letters
        } else {
            PhoneError::UnexpectedCharacter(c)
        });
    }
    let number = match international_form(text, country) {
        Some(intl) => phonenumber::parse(None, intl),
        None => phonenumber::parse(Some(country), text),
    }
    .map_err(|e| PhoneError::Unparseable {
        reason: e.to_string(),
    })?;
    if !phonenumber::is_valid(&number) {
        return Err(PhoneError::Invalid);
    }
    let e164 = number.format().mode(Mode::E164).to_string();
    // A valid number always formats as E.164; should the metadata ever disagree with
    // `AccountId`'s rules, the number is refused rather than trusted.
    AccountId::parse_phone(&e164).map_err(|_| PhoneError::Invalid)
}

/// `text` as "+CC…" when it is written internationally (a leading `+`, or the default
/// country's international prefix such as 011 in the US or 00 in Germany), else `None`.
///
/// Why: phonenumber 0.3 applies the *default* country's national-prefix rule to every number,
/// even one with its own country code: "+49 151 23456789" with default US loses the 1 of 151
/// and names another subscriber. Parsed without a default country, it uses the number's own.
/// A bracketed trunk prefix after the country code ("+49 (0) 151 …", common on European
/// business cards) is dropped: it is never dialled from abroad.
fn international_form(text: &str, country: country::Id) -> Option<String> {
    if text.starts_with('+') {
        return Some(text.replacen("(0)", "", 1));
    }
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let idd = DATABASE.by_id(country.as_ref())?.international_prefix()?;
    let end = idd.find(&digits).filter(|m| m.start() == 0)?.end();
    (end > 0).then(|| format!("+{}", &digits[end..]))
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, ' ' | '+' | '-' | '.' | '(' | ')' | '/')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn common_notations_normalise_to_e164() {
        let table = [
            ("+1 415-555-0100", "US", "+14155550100"),
            ("(415) 555 0100", "US", "+14155550100"),
            ("415.555.0100", "us", "+14155550100"),
            ("  +14155550100  ", "DE", "+14155550100"),
            ("0151 23456789", "DE", "+4915123456789"),
            ("+49 (0) 151 / 234 567 89", "US", "+4915123456789"),
            ("030 123456", "DE", "+4930123456"),
            // International forms keep their own country whatever the default (phonenumber
            // 0.3 alone would strip the default's trunk prefix: +49 151… → +49 51…).
            ("+49 151 23456789", "US", "+4915123456789"),
            ("011 49 151 23456789", "US", "+4915123456789"),
            ("0049 151 23456789", "DE", "+4915123456789"),
            ("0049 151 23456789", "FR", "+4915123456789"),
            ("+39 06 6982 1234", "DE", "+390669821234"),
            ("0039 06 6982 1234", "DE", "+390669821234"),
            ("+44 20 7946 0958", "US", "+442079460958"),
            ("+44 (0)20 7946 0958", "DE", "+442079460958"),
            ("+1 (415) 555-0100", "DE", "+14155550100"),
            ("001 415 555 0100", "DE", "+14155550100"),
            ("1 415 555 0100", "US", "+14155550100"),
        ];
        for (input, country, want) in table {
            let got = normalise(input, country).map(|a| a.as_str().to_owned());
            assert_eq!(got.as_deref(), Ok(want), "{input:?} with {country}");
        }
    }

    #[test]
    fn bad_inputs_are_refused_with_a_specific_error() {
        let too_long = "1".repeat(MAX_PHONE_INPUT_BYTES + 1);
        assert_eq!(
            normalise(&too_long, "US"),
            Err(PhoneError::TooLong { bytes: 33 })
        );
        assert_eq!(normalise("   ", "US"), Err(PhoneError::Empty));
        assert_eq!(normalise("1-800-FLOWERS", "US"), Err(PhoneError::Letters));
        assert_eq!(
            normalise("415 555 0100 x12", "US"),
            Err(PhoneError::Letters)
        );
        assert_eq!(
            normalise("415#555#0100", "US"),
            Err(PhoneError::UnexpectedCharacter('#'))
        );
        assert!(matches!(
            normalise("+", "US"),
            Err(PhoneError::Unparseable { .. })
        ));
        // 555-1234 style too-short and a US number with an area code that does not exist.
        assert_eq!(normalise("123", "US"), Err(PhoneError::Invalid));
        assert_eq!(normalise("(099) 555 0100", "US"), Err(PhoneError::Invalid));
    }

    #[test]
    fn an_unknown_default_country_is_the_operators_error() {
        assert_eq!(
            normalise("415 555 0100", "XX"),
            Err(PhoneError::UnknownDefaultCountry("XX".into()))
        );
    }

    #[test]
    fn the_length_bound_applies_before_anything_else() {
        // Letters and a bad country, but too long wins: no work is done on oversized input.
        let input = "a".repeat(100);
        assert_eq!(
            normalise(&input, "nowhere"),
            Err(PhoneError::TooLong { bytes: 100 })
        );
    }
}
