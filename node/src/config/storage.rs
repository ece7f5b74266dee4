//! `[storage]`: where a storage node keeps its objects.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::error::ConfigError;
use crate::engine::EngineOptions;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [storage] table")]
pub(super) struct RawStorage {
    path: Option<Spanned<String>>,
    cache_bytes: Option<Spanned<u64>>,
}

/// The `[storage]` section of a storage node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFiles {
    /// The redb database file (`storage.path`), resolved against the config file's directory;
    /// created when it does not exist.
    pub path: PathBuf,
    /// How the engine opens it: its page cache's size (`storage.cache_bytes`, by default
    /// [`EngineOptions`]'s). The kernel's page cache holds the file as well, so a smaller
    /// cache costs reads a system call, not a disk access.
    pub engine: EngineOptions,
}

impl StorageFiles {
    pub(super) fn check(
        raw: Spanned<RawStorage>,
        check: &Checker<'_>,
    ) -> Result<Self, ConfigError> {
        let section = Some(raw.span());
        let raw = raw.into_inner();
        let cache_bytes = match raw.cache_bytes {
            None => EngineOptions::default().cache_bytes,
            Some(value) if *value.get_ref() < EngineOptions::MIN_CACHE_BYTES => {
                return Err(check.invalid(
                    "storage.cache_bytes",
                    &value,
                    value.get_ref(),
                    format!(
                        "at least {} bytes (1 MiB): the cache also holds the pages a commit \
                         writes",
                        EngineOptions::MIN_CACHE_BYTES
                    ),
                ));
            }
            Some(value) => *value.get_ref(),
        };
        let path = check.required(
            raw.path,
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
            engine: EngineOptions { cache_bytes },
        })
    }
}
