//! Text that people set for others to read: display names (entity, agent) and group
//! subjects. Owns which characters they may not hold; the callers own the lengths.
//!
//! Refused are control characters and every character that changes how the text around it
//! is laid out without being visible: the bidirectional embeddings, overrides and isolates
//! (U+202A..U+202E, U+2066..U+2069), the directional marks (U+200E, U+200F, U+061C), line and
//! paragraph separators and the byte-order mark. With them a name like "Dana" could render as
//! another ("@acme (Dana)" spoofed by a right-to-left override). The zero-width joiner stays
//! allowed: emoji sequences need it.

/// The first character of `text` that a name may not hold, with its Unicode name.
pub fn forbidden_char(text: &str) -> Option<(char, &'static str)> {
    text.chars().find_map(|c| describe(c).map(|name| (c, name)))
}

/// A specific refusal of `text` as `what` ("a display name", "a group subject"), or `None`.
pub fn refusal(what: &str, text: &str) -> Option<String> {
    forbidden_char(text).map(|(c, name)| {
        format!(
            "U+{:04X} {name} is not allowed in {what}: it changes how the text around it reads",
            u32::from(c)
        )
    })
}

fn describe(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{202A}' => "LEFT-TO-RIGHT EMBEDDING",
        '\u{202B}' => "RIGHT-TO-LEFT EMBEDDING",
        '\u{202C}' => "POP DIRECTIONAL FORMATTING",
        '\u{202D}' => "LEFT-TO-RIGHT OVERRIDE",
        '\u{202E}' => "RIGHT-TO-LEFT OVERRIDE",
        '\u{2066}' => "LEFT-TO-RIGHT ISOLATE",
        '\u{2067}' => "RIGHT-TO-LEFT ISOLATE",
        '\u{2068}' => "FIRST STRONG ISOLATE",
        '\u{2069}' => "POP DIRECTIONAL ISOLATE",
        '\u{200E}' => "LEFT-TO-RIGHT MARK",
        '\u{200F}' => "RIGHT-TO-LEFT MARK",
        '\u{061C}' => "ARABIC LETTER MARK",
        '\u{2028}' => "LINE SEPARATOR",
        '\u{2029}' => "PARAGRAPH SEPARATOR",
        '\u{FEFF}' => "ZERO WIDTH NO-BREAK SPACE (byte-order mark)",
        c if c.is_control() => "(a control character)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidirectional_controls_are_named_and_ordinary_names_pass() {
        assert_eq!(
            refusal("a display name", "Dana\u{202E}nomis").as_deref(),
            Some("U+202E RIGHT-TO-LEFT OVERRIDE is not allowed in a display name: it changes how the text around it reads")
        );
        for bad in ["\u{2066}x", "a\u{200F}", "tab\there", "\u{FEFF}"] {
            assert!(forbidden_char(bad).is_some(), "{bad:?}");
        }
        for good in ["Dana", "دانا", "Zoë 👩‍👩‍👧", "Cold room 3"] {
            assert_eq!(forbidden_char(good), None, "{good:?}");
        }
    }
}
