//! `[log]`: how much the node logs.

use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::error::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [log] table")]
pub(super) struct RawLog {
    level: Option<Spanned<String>>,
}

/// The least severe events logged (`log.level`, default `info`). `RUST_LOG`, when set, is
/// meant to take precedence over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// Also the node's life cycle: start, peers joining and leaving, shutdown.
    #[default]
    Info,
    /// Also protocol decisions.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The level as written in the file (and as `tracing` spells it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }

    pub(super) fn check(
        raw: Option<Spanned<RawLog>>,
        check: &Checker<'_>,
    ) -> Result<Self, ConfigError> {
        let Some(level) = raw.and_then(|raw| raw.into_inner().level) else {
            return Ok(Self::default());
        };
        Ok(match level.get_ref().to_ascii_lowercase().as_str() {
            "error" => Self::Error,
            "warn" => Self::Warn,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => {
                return Err(check.invalid(
                    "log.level",
                    &level,
                    format!("{:?}", level.get_ref()),
                    "one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
                ));
            }
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
