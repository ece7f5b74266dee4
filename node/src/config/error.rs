//! What can be wrong with a configuration file, said so that a person can fix it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where in a configuration file something was found: the file and, when known, the line and
/// column (both counted from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file the text came from (as given to [`NodeConfig::load`](super::NodeConfig::load)
    /// or [`NodeConfig::parse`](super::NodeConfig::parse)).
    pub origin: PathBuf,
    /// Line and column, counted from 1, when the mistake has a place in the text.
    pub position: Option<(usize, usize)>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}", self.origin.display()),
            None => write!(f, "{}", self.origin.display()),
        }
    }
}

/// A configuration file that cannot be used. Every variant but [`Read`](Self::Read) names the
/// key at fault as a dotted path (`multicast.group`), available through [`key`](Self::key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The text is not valid TOML (or is not UTF-8).
    #[error("{at}: not valid TOML: {message}")]
    Syntax {
        /// Where.
        at: Location,
        /// The parser's explanation.
        message: String,
    },
    /// A section or key that no node reads (usually a typo).
    #[error("{at}: unknown key `{key}`: {message}")]
    UnknownKey {
        /// Where.
        at: Location,
        /// The dotted path of the unknown key.
        key: String,
        /// The keys that are allowed there.
        message: String,
    },
    /// A value of the wrong TOML type (a number where a string is expected, ...).
    #[error("{at}: `{key}` has the wrong type: {message}")]
    WrongType {
        /// Where.
        at: Location,
        /// The dotted path of the key.
        key: String,
        /// What was found and what was expected.
        message: String,
    },
    /// A key or section the node's role needs is absent.
    #[error("{at}: `{key}` is missing: {needed_because}")]
    Missing {
        /// The file (and the enclosing section's place when there is one).
        at: Location,
        /// The dotted path of the missing key or section.
        key: String,
        /// Why this node needs it.
        needed_because: String,
    },
    /// A section that the node's role does not read: present by mistake, or the role is wrong.
    #[error("{at}: `{key}` is not read by a {role} node: {hint}")]
    NotForRole {
        /// Where.
        at: Location,
        /// The section.
        key: String,
        /// The role given in `node.role`.
        role: String,
        /// What the section is for.
        hint: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("{at}: `{key}` = {value} is invalid: expected {expected}")]
    Invalid {
        /// Where.
        at: Location,
        /// The dotted path of the key.
        key: String,
        /// The value as written.
        value: String,
        /// What would be accepted.
        expected: String,
    },
}

impl ConfigError {
    /// The dotted path of the key at fault (`storage.path`), if the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Read { .. } | Self::Syntax { .. } => None,
            Self::UnknownKey { key, .. }
            | Self::WrongType { key, .. }
            | Self::Missing { key, .. }
            | Self::NotForRole { key, .. }
            | Self::Invalid { key, .. } => Some(key),
        }
    }

    /// Where in which file the mistake is, if the error is about the file's content.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Read { .. } => None,
            Self::Syntax { at, .. }
            | Self::UnknownKey { at, .. }
            | Self::WrongType { at, .. }
            | Self::Missing { at, .. }
            | Self::NotForRole { at, .. }
            | Self::Invalid { at, .. } => Some(at),
        }
    }
}
