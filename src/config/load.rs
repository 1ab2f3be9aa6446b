//! Layering: defaults < file < environment < `--set` flags, reporting every problem at once.
//!
//! The known keys are found by serialising `Config::default()` to TOML, so they cannot drift
//! from the structs. Each value a layer supplies is checked on its own, merged into the
//! defaults, so one bad value does not hide the next. This module never reads the process
//! environment: the caller passes the variables in.

use std::path::Path;

use serde::Deserialize;
use toml::{Table, Value};

use super::spans::{key_lines, line_and_column};
use super::validate::{validate, Origins};
use super::{Config, ConfigError, ConfigErrors, Origin};

/// Environment variables that start with the prefix but are not config keys.
const ENV_PREFIX: &str = "RELAYBOX_";
const ENV_CONFIG_FILE: &str = "RELAYBOX_CONFIG";
const ENV_CLIENT_PREFIX: &str = "RELAYBOX_CLIENT_";
/// The admin API token for `relaybox admin` (a secret, never a config key).
const ENV_ADMIN_TOKEN: &str = "RELAYBOX_ADMIN_TOKEN";

/// The name `load_str` gives its text in errors.
const INLINE_TEXT: &str = "<config text>";

/// How close a misspelt name must be to a real one (normalised Damerau–Levenshtein) to be
/// suggested.
const SUGGESTION_SIMILARITY: f64 = 0.7;

/// The layers above the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sources<'a> {
    /// The config file; `None` means defaults only. A file that is named but missing is an
    /// error, so the caller decides whether a default path is optional.
    pub file: Option<&'a Path>,
    /// Environment variables, e.g. from `std::env::vars_os()`. Only `RELAYBOX_*` names are
    /// looked at; `RELAYBOX_CONFIG`, `RELAYBOX_ADMIN_TOKEN` and `RELAYBOX_CLIENT_*` belong to the CLI and are ignored.
    pub env: &'a [(String, String)],
    /// `--set` flags as (`section.key`, value) pairs, in command-line order (later wins).
    pub overrides: &'a [(String, String)],
}

/// Builds the configuration from its layers, or returns every problem found in any of them.
///
/// Environment and override values are read as TOML values when they parse (`42`, `true`,
/// `["a", "b"]`, `"quoted"`), otherwise as plain strings. For a key whose value is a string
/// (an address, a duration, a path) the text is always taken as written, so `10:30:00` stays
/// a string rather than becoming a TOML time.
pub fn load(src: &Sources) -> Result<Config, ConfigErrors> {
    let mut loader = Loader::new();
    if let Some(path) = src.file {
        match std::fs::read_to_string(path) {
            Ok(text) => loader.file(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                loader.errors.push(ConfigError::FileNotFound {
                    path: path.to_owned(),
                })
            }
            Err(source) => loader.errors.push(ConfigError::Unreadable {
                path: path.to_owned(),
                source,
            }),
        }
    }
    loader.env(src.env);
    loader.overrides(src.overrides);
    loader.finish()
}

/// [`load`] with the file's text given directly (named `<config text>` in errors).
pub fn load_str(
    toml_text: &str,
    env: &[(String, String)],
    overrides: &[(String, String)],
) -> Result<Config, ConfigErrors> {
    let mut loader = Loader::new();
    loader.file(toml_text, Path::new(INLINE_TEXT));
    loader.env(env);
    loader.overrides(overrides);
    loader.finish()
}

/// Splits one `--set section.key=value` argument (for the CLI's argument parser).
pub fn parse_override(arg: &str) -> Result<(String, String), ConfigError> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(ConfigError::MalformedOverride {
            arg: arg.to_owned(),
        }),
    }
}

/// The configuration being assembled, layer by layer.
struct Loader {
    /// `Config::default()` as TOML: the known sections and keys, and the base layer.
    defaults: Table,
    /// Every known key as `section.key`, for suggestions.
    names: Vec<String>,
    /// The defaults with every accepted value applied, in layer order.
    merged: Table,
    /// Which layer last set each key.
    origins: Origins,
    errors: Vec<ConfigError>,
}

impl Loader {
    fn new() -> Self {
        // Cannot fail: every field serialises to a TOML string, integer or array of strings,
        // and the top level holds only tables. The tests load through here on every run.
        #[allow(clippy::expect_used)]
        let defaults = Table::try_from(Config::default()).expect("Config::default() serialises");
        let names = defaults
            .iter()
            .filter_map(|(section, keys)| Some((section, keys.as_table()?)))
            .flat_map(|(section, keys)| keys.keys().map(move |key| format!("{section}.{key}")))
            .collect();
        Self {
            merged: defaults.clone(),
            defaults,
            names,
            origins: Origins::new(),
            errors: Vec::new(),
        }
    }

    /// The default value of `section.key`, if that is a known key.
    fn default_of(&self, section: &str, key: &str) -> Option<&Value> {
        self.defaults.get(section)?.as_table()?.get(key)
    }

    fn file(&mut self, text: &str, path: &Path) {
        let table: Table = match toml::from_str(text) {
            Ok(table) => table,
            Err(e) => {
                let (line, column) = e
                    .span()
                    .map(|span| line_and_column(text, span.start))
                    .unwrap_or((1, 1));
                self.errors.push(ConfigError::Syntax {
                    path: path.to_owned(),
                    line,
                    column,
                    // One error per line: toml puts "expected …" on a line of its own.
                    message: e.message().trim().replace('\n', "; "),
                });
                return;
            }
        };
        let lines = key_lines(text);
        let origin = |name: &str| Origin::File {
            path: path.to_owned(),
            line: lines.get(name).copied(),
        };
        // The table is sorted by key; report in the order the operator wrote things.
        let first_error = self.errors.len();
        for (section, value) in table {
            if !self.defaults.contains_key(&section) {
                let suggestion = closest(&section, self.defaults.keys().map(String::as_str));
                self.errors.push(ConfigError::UnknownKey {
                    origin: origin(&section),
                    key: section,
                    suggestion,
                });
                continue;
            }
            let Value::Table(keys) = value else {
                self.errors.push(ConfigError::InvalidValue {
                    origin: origin(&section),
                    message: format!("must be a table: write `[{section}]` above its keys"),
                    key: section,
                });
                continue;
            };
            for (key, value) in keys {
                let name = format!("{section}.{key}");
                if self.default_of(&section, &key).is_some() {
                    self.set(&section, &key, value, origin(&name));
                } else {
                    self.errors.push(ConfigError::UnknownKey {
                        suggestion: self.suggest(&name),
                        origin: origin(&name),
                        key: name,
                    });
                }
            }
        }
        self.errors[first_error..].sort_by_key(|e| match e {
            ConfigError::UnknownKey {
                origin: Origin::File { line, .. },
                ..
            }
            | ConfigError::InvalidValue {
                origin: Origin::File { line, .. },
                ..
            } => *line,
            _ => None,
        });
    }

    fn env(&mut self, vars: &[(String, String)]) {
        // Sorted so the errors come out in the same order whatever order the OS lists them.
        let mut vars: Vec<&(String, String)> = vars
            .iter()
            .filter(|(name, _)| {
                name.starts_with(ENV_PREFIX)
                    && name != ENV_CONFIG_FILE
                    && name != ENV_ADMIN_TOKEN
                    && !name.starts_with(ENV_CLIENT_PREFIX)
            })
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, raw) in vars {
            // Sections never contain `_`, so the first `_` after the prefix ends the section.
            let rest = &name[ENV_PREFIX.len()..];
            let dotted = rest.to_ascii_lowercase().replacen('_', ".", 1);
            let canonical = rest == rest.to_ascii_uppercase();
            match dotted.split_once('.') {
                Some((section, key)) if canonical && self.default_of(section, key).is_some() => {
                    self.set_raw(section, key, raw, Origin::Env(name.clone()));
                }
                _ => self.errors.push(ConfigError::UnknownEnvVar {
                    suggestion: self.suggest(&dotted).map(|s| env_name(&s)),
                    name: name.clone(),
                }),
            }
        }
    }

    fn overrides(&mut self, overrides: &[(String, String)]) {
        for (name, raw) in overrides {
            match name.split_once('.') {
                Some((section, key)) if self.default_of(section, key).is_some() => {
                    self.set_raw(section, key, raw, Origin::Flag);
                }
                _ => self.errors.push(ConfigError::UnknownKey {
                    key: name.clone(),
                    origin: Origin::Flag,
                    suggestion: self.suggest(name),
                }),
            }
        }
    }

    /// Sets a known key from text (environment or flag), typed by the key's default.
    fn set_raw(&mut self, section: &str, key: &str, raw: &str, origin: Origin) {
        let wants_string = self
            .default_of(section, key)
            .is_some_and(|default| default.is_str());
        let value = match Value::deserialize(toml::de::ValueDeserializer::new(raw)) {
            Ok(value @ Value::String(_)) => value,
            Ok(value) if !wants_string => value,
            _ => Value::String(raw.to_owned()),
        };
        self.set(section, key, value, origin);
    }

    /// Sets a known key if its value has the right type; records an error naming it if not.
    fn set(&mut self, section: &str, key: &str, value: Value, origin: Origin) {
        let name = format!("{section}.{key}");
        // Checked against the defaults alone, so the error is about this value only.
        let mut candidate = self.defaults.clone();
        if let Some(Value::Table(keys)) = candidate.get_mut(section) {
            keys.insert(key.to_owned(), value.clone());
        }
        if let Err(e) = Value::Table(candidate).try_into::<Config>() {
            let mut message = e.message().trim().to_owned();
            // Some serde messages do not show the expected form; the default always does.
            match self.default_of(section, key) {
                Some(Value::Array(_)) if value.is_str() => message
                    .push_str(r#"; write a TOML array, e.g. ["/usr/bin/program", "{phone}"]"#),
                Some(Value::String(default)) if !message.contains("expected one of") => {
                    message.push_str(&format!(" (the default is \"{default}\")"));
                }
                _ => {}
            }
            self.errors.push(ConfigError::InvalidValue {
                key: name,
                origin,
                message,
            });
            return;
        }
        if let Some(Value::Table(keys)) = self.merged.get_mut(section) {
            keys.insert(key.to_owned(), value);
        }
        self.origins.insert(name, origin);
    }

    fn finish(mut self) -> Result<Config, ConfigErrors> {
        match Value::Table(self.merged).try_into::<Config>() {
            Ok(config) => {
                self.errors.extend(validate(&config, &self.origins));
                if self.errors.is_empty() {
                    return Ok(config);
                }
            }
            // Every merged value was accepted on its own and keys are independent in serde,
            // so this is not expected; it is still reported rather than unwrapped.
            Err(e) => self.errors.push(ConfigError::InvalidValue {
                key: "config".to_owned(),
                origin: Origin::Default,
                message: e.message().to_owned(),
            }),
        }
        Err(ConfigErrors(self.errors))
    }

    /// The known `section.key` closest to `wrong`, or the key of that name in another section
    /// (for a key written under the wrong heading).
    fn suggest(&self, wrong: &str) -> Option<String> {
        closest(wrong, self.names.iter().map(String::as_str)).or_else(|| {
            let key = wrong.rsplit('.').next().unwrap_or(wrong);
            self.names
                .iter()
                .find(|name| name.rsplit('.').next() == Some(key))
                .cloned()
        })
    }
}

/// `limits.max_connections` → `RELAYBOX_LIMITS_MAX_CONNECTIONS`.
fn env_name(dotted: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        dotted.replace('.', "_").to_ascii_uppercase()
    )
}

fn closest<'a>(wrong: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    candidates
        .map(|name| (strsim::normalized_damerau_levenshtein(wrong, name), name))
        .filter(|(similarity, _)| *similarity >= SUGGESTION_SIMILARITY)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
#[path = "load_tests.rs"]
mod tests;
