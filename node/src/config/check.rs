//! Turning spans and toml's errors into [`ConfigError`]s that name the key and its place.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, Location};

/// The text being checked and where it came from, for locating mistakes.
pub(super) struct Checker<'a> {
    origin: &'a Path,
    text: &'a str,
}

impl<'a> Checker<'a> {
    pub(super) fn new(origin: &'a Path, text: &'a str) -> Self {
        Self { origin, text }
    }

    /// The directory relative paths in the file are resolved against.
    pub(super) fn base_dir(&self) -> &Path {
        self.origin.parent().unwrap_or(Path::new(""))
    }

    /// A relative path taken as relative to the config file's directory, so that a node's files
    /// do not depend on the directory the process was started from.
    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        self.base_dir().join(path)
    }

    pub(super) fn at(&self, span: Option<Range<usize>>) -> Location {
        Location {
            origin: self.origin.to_path_buf(),
            position: span.map(|span| line_column(self.text, span.start)),
        }
    }

    pub(super) fn invalid<T>(
        &self,
        key: &str,
        value: &Spanned<T>,
        shown: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(Some(value.span())),
            key: key.to_owned(),
            value: shown.to_string(),
            expected: expected.into(),
        }
    }

    /// The value of a key its section cannot do without.
    pub(super) fn required<T>(
        &self,
        value: Option<Spanned<T>>,
        key: &str,
        section: Option<Range<usize>>,
        needed_because: &str,
    ) -> Result<Spanned<T>, ConfigError> {
        value.ok_or_else(|| ConfigError::Missing {
            at: self.at(section),
            key: key.to_owned(),
            needed_because: needed_because.to_owned(),
        })
    }

    /// A string value that must not be empty.
    pub(super) fn non_empty<'s>(
        &self,
        key: &str,
        value: &'s Spanned<String>,
        expected: &str,
    ) -> Result<&'s str, ConfigError> {
        let text = value.get_ref().trim();
        if text.is_empty() {
            return Err(self.invalid(key, value, "\"\"", expected));
        }
        Ok(text)
    }

    /// Classifies an error from toml's deserializer, naming the key whose key or value holds
    /// the error's span.
    pub(super) fn toml_error(&self, error: toml::de::Error) -> ConfigError {
        let span = error.span();
        let message = error.message().trim().to_owned();
        let Ok(document) = DeTable::parse(self.text) else {
            return ConfigError::Syntax {
                at: self.at(span),
                message,
            };
        };
        let key = span
            .as_ref()
            .and_then(|span| key_at(document.get_ref(), span.start))
            .unwrap_or_default();
        if key.is_empty() {
            ConfigError::Syntax {
                at: self.at(span),
                message,
            }
        } else if message.starts_with("unknown field") {
            ConfigError::UnknownKey {
                at: self.at(span),
                key,
                message,
            }
        } else {
            ConfigError::WrongType {
                at: self.at(span),
                key,
                message,
            }
        }
    }
}

/// The dotted path of the innermost key whose name or value covers byte `offset`.
fn key_at(table: &DeTable<'_>, offset: usize) -> Option<String> {
    for (name, value) in table.iter() {
        let covers =
            |span: Range<usize>| span.start <= offset && offset < span.end.max(span.start + 1);
        let inner = match value.get_ref() {
            DeValue::Table(inner) => key_at(inner, offset),
            _ => None,
        };
        if let Some(inner) = inner {
            return Some(format!("{}.{inner}", name.get_ref()));
        }
        if covers(name.span()) || covers(value.span()) {
            return Some(name.get_ref().to_string());
        }
    }
    None
}

/// Line and column (from 1, columns in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
