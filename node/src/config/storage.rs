//! `[storage]`: where a storage node keeps its objects.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::error::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [storage] table")]
pub(super) struct RawStorage {
    path: Option<Spanned<String>>,
}

/// The `[storage]` section of a storage node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFiles {
    /// The redb database file (`storage.path`), resolved against the config file's directory;
    /// created when it does not exist.
    pub path: PathBuf,
}

impl StorageFiles {
    pub(super) fn check(
        raw: Spanned<RawStorage>,
        check: &Checker<'_>,
    ) -> Result<Self, ConfigError> {
        let section = Some(raw.span());
        let path = check.required(
            raw.into_inner().path,
            "storage.path",
            section,
            "a storage node keeps its objects in this redb file",
        )?;
        let text = check.non_empty("storage.path", &path, "a path to the redb database file")?;
        if text.ends_with('/') {
            return Err(check.invalid(
                "storage.path",
                &path,
                format!("{text:?}"),
                "a file path, not a directory",
            ));
        }
        Ok(Self {
            path: check.resolve(text),
        })
    }
}
