//! Where each key is written in a TOML document, so errors can name the line.
//!
//! `toml::Table` forgets positions; reading the document a second time into `Spanned` keys
//! recovers them without another dependency. Owns nothing else.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The line of each section and key written in `text` (`"section"`, `"section.key"`).
/// Best effort: an error message without a line is still useful, so a document whose spans
/// cannot be read gives an empty map.
pub(super) fn key_lines(text: &str) -> BTreeMap<String, usize> {
    let mut lines = BTreeMap::new();
    let Ok(Keys(sections)) = toml::from_str::<Keys<Keys<IgnoredAny>>>(text) else {
        return lines;
    };
    let line_of = |key: &Spanned<String>| line_and_column(text, key.span().start).0;
    for (section, Keys(keys)) in sections {
        for (key, _) in keys {
            lines.insert(
                format!("{}.{}", section.get_ref(), key.get_ref()),
                line_of(&key),
            );
        }
        // A section's keys may come before its header (dotted keys); keep the first mention.
        lines
            .entry(section.get_ref().clone())
            .or_insert(line_of(&section));
    }
    lines
}

/// The keys of a TOML table with their spans, each value read as `V`; anything that is not a
/// table reads as no keys.
struct Keys<V>(Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Keys<V> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeysVisitor(PhantomData))
    }
}

struct KeysVisitor<V>(PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for KeysVisitor<V> {
    type Value = Keys<V>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys<V>, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            keys.push((key, map.next_value()?));
        }
        Ok(Keys(keys))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Keys<V>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Keys(Vec::new()))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Keys<V>, E> {
        Ok(Keys(Vec::new()))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Keys<V>, E> {
        Ok(Keys(Vec::new()))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Keys<V>, E> {
        Ok(Keys(Vec::new()))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Keys<V>, E> {
        Ok(Keys(Vec::new()))
    }

    fn visit_str<E>(self, _: &str) -> Result<Keys<V>, E> {
        Ok(Keys(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_found_for_headers_keys_and_dotted_keys() {
        let text =
            "[limits]\nmax_connections = 5\n\n[keys]\nmax_one_time_keys = 9\nlog.level = \"x\"\n";
        let lines = key_lines(text);
        assert_eq!(lines.get("limits"), Some(&1));
        assert_eq!(lines.get("limits.max_connections"), Some(&2));
        assert_eq!(lines.get("keys"), Some(&4));
        assert_eq!(lines.get("keys.max_one_time_keys"), Some(&5));
        assert_eq!(lines.get("keys.log"), Some(&6));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        // "é" is two bytes: the `=` at byte 5 is the third character of line 2.
        assert_eq!(line_and_column("a\né = x", 5), (2, 3));
    }
}
