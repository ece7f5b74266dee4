//! Asking a master group who leads: the primary and its term as `replicast status` reports them.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{WAIT, binary, output};

/// The primary and its term, as `replicast status --json` with `config` reports them (the
/// answer of the primary, after redirects), if a primary answers.
pub fn primary_and_term(config: &Path) -> Option<(String, u64)> {
    let outcome = output(
        Command::new(binary())
            .args(["status", "--json", "--timeout", "5", "--config"])
            .arg(config),
        "replicast status",
    );
    let status: serde_json::Value = serde_json::from_str(&outcome.stdout).ok()?;
    let answering = status["master"].as_str()?;
    let primary = status["masters"]
        .as_array()?
        .iter()
        .any(|master| master["role"] == "primary" && master["name"] == answering);
    primary.then(|| (answering.to_owned(), status["term"].as_u64().unwrap_or(0)))
}

/// Waits (bounded by [`WAIT`]) for a primary other than `old`; returns it and its term.
///
/// # Panics
/// When none answers in time.
pub fn other_primary(config: &Path, old: &str) -> (String, u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        match primary_and_term(config) {
            Some((primary, term)) if primary != old => return (primary, term),
            answer => assert!(
                Instant::now() < deadline,
                "no primary other than {old} within {WAIT:?} (last: {answer:?})"
            ),
        }
        // A pause between two questions, not a synchronization: the answer decides.
        std::thread::sleep(Duration::from_millis(100));
    }
}
