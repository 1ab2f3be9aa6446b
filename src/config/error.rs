//! Configuration errors: what went wrong, with which key, and which layer supplied the value.
//!
//! Owns the error types and their wording; deciding what is an error is `load` and `validate`.

use std::fmt;
use std::path::PathBuf;

/// Which layer a configuration value came from, so an error points at the thing to fix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    /// The default in code (also what `config/relaybox.toml` shows).
    #[default]
    Default,
    /// A config file; `line` is where the key is written, when known.
    File { path: PathBuf, line: Option<usize> },
    /// An environment variable, by name.
    Env(String),
    /// A `--set section.key=value` flag.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{}:{line}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag => f.write_str("--set"),
        }
    }
}

/// One problem with the configuration. Every variant is the operator's to fix; the docs say
/// which part of the setup is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The operator named a config file that does not exist (a wrong `--config` path, or a
    /// package that did not install the file).
    #[error("{}: config file not found", path.display())]
    FileNotFound { path: PathBuf },

    /// The config file exists but cannot be read: the host's permissions (the service user
    /// cannot read it), it is a directory, or it is not UTF-8.
    #[error("{}: cannot read config file: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The config file is not valid TOML: the operator's edit. Nothing in it is used.
    #[error("{}:{line}:{column}: TOML syntax error: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// A key or section that relaybox does not have, in the file or a `--set` flag: usually
    /// the operator's typo, or a key from another version.
    #[error(
        "{key} ({origin}): unknown {}{}",
        if key.contains('.') { "key" } else { "section" },
        did_you_mean(suggestion.as_deref())
    )]
    UnknownKey {
        key: String,
        origin: Origin,
        suggestion: Option<String>,
    },

    /// A `RELAYBOX_*` environment variable that names no key: the operator's typo in the
    /// service environment (unit file, `EnvironmentFile`, container spec).
    #[error("{name} (environment): not a relaybox setting{}", did_you_mean(suggestion.as_deref()))]
    UnknownEnvVar {
        name: String,
        suggestion: Option<String>,
    },

    /// A `--set` argument that is not `section.key=value`: the operator's command line.
    #[error("--set {arg}: expected section.key=value")]
    MalformedOverride { arg: String },

    /// A value of the wrong type or format for its key (a string for a number, "10x" for a
    /// duration, an address without a port): the operator's value.
    #[error("{key} ({origin}): {message}")]
    InvalidValue {
        key: String,
        origin: Origin,
        message: String,
    },

    /// A well-formed value the relay refuses: out of range, or inconsistent with another key
    /// (the message names it). The operator's value.
    #[error("{key} ({origin}): {message}")]
    Rejected {
        key: String,
        origin: Origin,
        message: String,
    },
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// Every problem found, in the order found: file, then environment, then flags, then rules
/// that span keys. Never empty when returned as an error.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems, one per entry.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    /// One problem per line, each naming the key and where its value came from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn errors_display_one_per_line_naming_key_and_origin() {
        let errors = ConfigErrors(vec![
            ConfigError::UnknownKey {
                key: "limits.max_conections".into(),
                origin: Origin::File {
                    path: "relaybox.toml".into(),
                    line: Some(7),
                },
                suggestion: Some("max_connections".into()),
            },
            ConfigError::Rejected {
                key: "limits.max_frame_bytes".into(),
                origin: Origin::Env("RELAYBOX_LIMITS_MAX_FRAME_BYTES".into()),
                message: "must be between 64 and 65535, got 70000".into(),
            },
        ]);
        assert_eq!(
            errors.to_string(),
            "limits.max_conections (relaybox.toml:7): unknown key; did you mean `max_connections`?\n\
             limits.max_frame_bytes (environment variable RELAYBOX_LIMITS_MAX_FRAME_BYTES): \
             must be between 64 and 65535, got 70000"
        );
    }
}
