//! Transfers between accounts: each transaction loads two accounts, moves an amount from
//! one to the other and commits. Any number of clients may run them at once on the same
//! accounts; conflicts abort a transfer, which is then retried.
//!
//! [`check`] then verifies, from a client's loads, that every account holds its initial
//! balance plus exactly the changes of the committed transfers (so every committed transfer
//! is visible and no aborted one is), and that the sum of all balances is unchanged.
//!
//! ```no_run
//! # async fn demo(client: &mut replicast_node::driver::ClientHandle) -> Result<(), replicast_testkit::workload::transfers::TransferError> {
//! use replicast_testkit::workload::transfers;
//!
//! let accounts = transfers::create_accounts(client, 20).await?;
//! let run = transfers::run(client, &accounts, 100, 7).await?;
//! transfers::check(client, &accounts, &run.commits).await?;
//! println!("{}", run.summary());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use replicast_node::client::AbortReason;
use replicast_node::driver::{ClientError, ClientHandle};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::transaction::TransactionInfo;

use crate::sim::SplitMix64;

/// The balance each account starts with.
pub const INITIAL_BALANCE: i64 = 1_000;

/// How many attempts [`run`] makes per transfer it must commit, at most.
pub const ATTEMPTS_PER_TRANSFER: usize = 20;

/// Why a transfer workload failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A client call failed in a way a retry does not fix.
    #[error("{during}: {source}")]
    Client {
        /// What the workload was doing.
        during: &'static str,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// Fewer than two accounts: a transfer needs a source and a destination.
    #[error("a transfer needs at least two accounts, got {0}")]
    TooFewAccounts(usize),
    /// The master handed out fewer object ids than accounts asked for.
    #[error("asked for {wanted} account ids, got {got}")]
    TooFewOids {
        /// Accounts asked for.
        wanted: usize,
        /// Ids received.
        got: usize,
    },
    /// An account does not exist.
    #[error("account {0} does not exist")]
    MissingAccount(Oid),
    /// An account's data is not a balance (8 bytes, little-endian).
    #[error("account {oid} holds {len} bytes, not a balance")]
    NotABalance {
        /// The account.
        oid: Oid,
        /// Its length.
        len: usize,
    },
    /// An account the commits do not name was changed, or a commit names an unknown account.
    #[error("commit {tid} changes {oid}, which is not one of the accounts")]
    UnknownAccount {
        /// The commit.
        tid: Tid,
        /// The object.
        oid: Oid,
    },
    /// Two commits share a TID.
    #[error("two commits have TID {0}")]
    DuplicateTid(Tid),
    /// An account does not hold its initial balance plus the committed changes: a committed
    /// transfer is missing or an aborted one is visible.
    #[error("account {oid} holds {found}, expected {expected}")]
    WrongBalance {
        /// The account.
        oid: Oid,
        /// Initial balance plus committed changes.
        expected: i64,
        /// What a load returned.
        found: i64,
    },
    /// The sum of the balances changed.
    #[error("the balances sum to {found}, expected {expected}")]
    SumChanged {
        /// Accounts times the initial balance.
        expected: i64,
        /// The sum loaded.
        found: i64,
    },
    /// Not every transfer committed within [`ATTEMPTS_PER_TRANSFER`] attempts each.
    #[error(
        "{committed} of {wanted} transfers committed in {attempts} attempts; last failures: {last_failures:?}"
    )]
    TooManyFailures {
        /// Transfers committed.
        committed: usize,
        /// Transfers asked for.
        wanted: usize,
        /// Attempts made.
        attempts: usize,
        /// The last few failures, for the log.
        last_failures: Vec<String>,
    },
}

/// One committed transfer: its TID and the change of each account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The commit's TID.
    pub tid: Tid,
    /// The change of each account it touched.
    pub deltas: Vec<(Oid, i64)>,
}

/// What [`run`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferRun {
    /// The committed transfers, in commit order.
    pub commits: Vec<Commit>,
    /// Attempts aborted by contention: a conflict (another client changed an account first),
    /// or an older transaction that needed the locks (the primary aborted this one, which had
    /// voted somewhere, so that no cycle of waits could form).
    pub conflicts: u64,
    /// Attempts aborted for another reason (a storage failed, a load found no replica),
    /// retried.
    pub other_aborts: u64,
    /// Why the last few of them were aborted (at most [`REMEMBERED_REASONS`]), oldest first.
    pub other_reasons: Vec<String>,
}

/// How many reasons of other aborts a [`TransferRun`] keeps.
pub const REMEMBERED_REASONS: usize = 4;

impl TransferRun {
    /// One line: committed, aborted (conflicts and others), and why the last other aborts
    /// were, if any (a run that should have none says what happened).
    ///
    /// ```
    /// use replicast_testkit::workload::transfers::TransferRun;
    ///
    /// let run = TransferRun { conflicts: 2, ..TransferRun::default() };
    /// assert_eq!(run.summary(), "committed 0, aborted 2 (conflicts 2, other 0)");
    /// let run = TransferRun {
    ///     other_aborts: 1,
    ///     other_reasons: vec!["storage s2 failed".into()],
    ///     ..TransferRun::default()
    /// };
    /// assert_eq!(
    ///     run.summary(),
    ///     "committed 0, aborted 1 (conflicts 0, other 1: storage s2 failed)"
    /// );
    /// ```
    pub fn summary(&self) -> String {
        let reasons = if self.other_reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", self.other_reasons.join("; "))
        };
        format!(
            "committed {}, aborted {} (conflicts {}, other {}{reasons})",
            self.commits.len(),
            self.conflicts + self.other_aborts,
            self.conflicts,
            self.other_aborts
        )
    }

    /// The gaps between the run's commits (see [`CommitGaps`](super::gaps::CommitGaps)).
    pub fn gaps(&self) -> super::gaps::CommitGaps {
        super::gaps::CommitGaps::of(self.commits.iter().map(|commit| commit.tid))
    }
}

/// The balance an account's data holds.
pub fn balance(oid: Oid, data: &ObjectData) -> Result<i64, TransferError> {
    let bytes = data.as_bytes();
    let array: [u8; 8] = bytes.try_into().map_err(|_| TransferError::NotABalance {
        oid,
        len: bytes.len(),
    })?;
    Ok(i64::from_le_bytes(array))
}

/// The data of an account holding `value`.
pub fn balance_data(value: i64) -> ObjectData {
    ObjectData::from(value.to_le_bytes().to_vec())
}

fn client_error(during: &'static str) -> impl FnOnce(ClientError) -> TransferError {
    move |source| TransferError::Client { during, source }
}

/// Creates `count` accounts holding [`INITIAL_BALANCE`] each, in one transaction.
pub async fn create_accounts(
    client: &mut ClientHandle,
    count: u32,
) -> Result<Vec<Oid>, TransferError> {
    if count < 2 {
        return Err(TransferError::TooFewAccounts(count as usize));
    }
    let mut accounts = Vec::new();
    // The master may hand out fewer ids per call than asked.
    while accounts.len() < count as usize {
        let missing = count - accounts.len() as u32;
        let oids = client
            .new_oids(missing)
            .await
            .map_err(client_error("allocating account ids"))?;
        if oids.is_empty() {
            return Err(TransferError::TooFewOids {
                wanted: count as usize,
                got: accounts.len(),
            });
        }
        accounts.extend(oids);
    }
    client
        .begin()
        .await
        .map_err(client_error("beginning the accounts"))?;
    for oid in &accounts {
        client
            .store(*oid, Tid::ZERO, balance_data(INITIAL_BALANCE))
            .await
            .map_err(client_error("storing an account"))?;
    }
    client
        .vote(TransactionInfo::default())
        .await
        .map_err(client_error("voting the accounts"))?;
    client
        .finish()
        .await
        .map_err(client_error("committing the accounts"))?;
    Ok(accounts)
}

/// How one attempt ended, short of an error the run cannot go on after.
enum Attempt {
    Committed(Commit),
    Conflict(String),
    Aborted(String),
}

/// Why an attempt stopped early: the client's error (maybe worth a retry) or the workload's.
enum Stop {
    Client(ClientError),
    Workload(TransferError),
}

impl From<ClientError> for Stop {
    fn from(error: ClientError) -> Self {
        Stop::Client(error)
    }
}

impl From<TransferError> for Stop {
    fn from(error: TransferError) -> Self {
        Stop::Workload(error)
    }
}

async fn transfer(client: &mut ClientHandle, deltas: &[(Oid, i64)]) -> Result<Tid, Stop> {
    client.begin().await?;
    let mut writes = Vec::new();
    for (oid, delta) in deltas {
        let (serial, data) = client
            .load(*oid)
            .await?
            .ok_or(TransferError::MissingAccount(*oid))?;
        writes.push((*oid, serial, balance(*oid, &data)? + delta));
    }
    for (oid, serial, value) in writes {
        client.store(oid, serial, balance_data(value)).await?;
    }
    client.vote(TransactionInfo::default()).await?;
    Ok(client.finish().await?)
}

async fn attempt(
    client: &mut ClientHandle,
    rng: &mut SplitMix64,
    accounts: &[Oid],
) -> Result<Attempt, TransferError> {
    let count = accounts.len() as u64;
    let from = rng.below(count) as usize;
    let to = (from + 1 + rng.below(count - 1) as usize) % accounts.len();
    let amount = 1 + rng.below(10) as i64;
    let deltas = vec![(accounts[from], -amount), (accounts[to], amount)];
    match transfer(client, &deltas).await {
        Ok(tid) => Ok(Attempt::Committed(Commit { tid, deltas })),
        Err(Stop::Client(ClientError::Aborted(
            reason @ (AbortReason::Conflict { .. }
            | AbortReason::Wounded { .. }
            | AbortReason::StoreAfterVote { .. }),
        ))) => Ok(Attempt::Conflict(format!("{reason:?}"))),
        Err(Stop::Client(ClientError::Conflicts(conflicts))) => {
            // The transaction stays open for resolution: give it up, and retry.
            client
                .abort()
                .await
                .map_err(client_error("aborting after a conflict"))?;
            Ok(Attempt::Conflict(format!("{conflicts:?}")))
        }
        Err(Stop::Client(ClientError::Aborted(reason))) => {
            Ok(Attempt::Aborted(format!("{reason:?}")))
        }
        Err(Stop::Client(ClientError::LoadFailed { oid, .. })) => {
            client
                .abort()
                .await
                .map_err(client_error("aborting after a failed load"))?;
            Ok(Attempt::Aborted(format!(
                "no replica answered the load of {oid}"
            )))
        }
        Err(stop) => {
            // The transaction may still be open: close it before reporting (its own failure
            // would hide the one that matters).
            let _ = client.abort().await;
            Err(match stop {
                Stop::Workload(error) => error,
                Stop::Client(source) => TransferError::Client {
                    during: "a transfer",
                    source,
                },
            })
        }
    }
}

/// Runs transfers between random `accounts` (chosen from `seed`) until `count` committed;
/// conflicts and other aborts are retried, at most [`ATTEMPTS_PER_TRANSFER`] attempts per
/// transfer in all. Timeouts and other client errors end the run.
pub async fn run(
    client: &mut ClientHandle,
    accounts: &[Oid],
    count: usize,
    seed: u64,
) -> Result<TransferRun, TransferError> {
    if accounts.len() < 2 {
        return Err(TransferError::TooFewAccounts(accounts.len()));
    }
    let mut rng = SplitMix64::new(seed);
    let mut run = TransferRun::default();
    let mut last_failures = Vec::new();
    let attempts = count.saturating_mul(ATTEMPTS_PER_TRANSFER);
    for _ in 0..attempts {
        if run.commits.len() == count {
            return Ok(run);
        }
        let failure = match attempt(client, &mut rng, accounts).await? {
            Attempt::Committed(commit) => {
                run.commits.push(commit);
                continue;
            }
            Attempt::Conflict(reason) => {
                run.conflicts += 1;
                reason
            }
            Attempt::Aborted(reason) => {
                run.other_aborts += 1;
                remember(&mut run.other_reasons, REMEMBERED_REASONS, reason.clone());
                reason
            }
        };
        remember(&mut last_failures, 8, failure);
    }
    if run.commits.len() == count {
        return Ok(run);
    }
    Err(TransferError::TooManyFailures {
        committed: run.commits.len(),
        wanted: count,
        attempts,
        last_failures,
    })
}

/// Keeps `reason` as the newest of at most `most` reasons, dropping the oldest.
fn remember(reasons: &mut Vec<String>, most: usize, reason: String) {
    if reasons.len() == most {
        reasons.remove(0);
    }
    reasons.push(reason);
}

/// Loads every account and checks it holds [`INITIAL_BALANCE`] plus the changes of exactly
/// `commits` (those of every client that ran on these accounts), that no two commits share a
/// TID, and that the sum is unchanged. Returns the sum.
pub async fn check<'a>(
    client: &mut ClientHandle,
    accounts: &[Oid],
    commits: impl IntoIterator<Item = &'a Commit>,
) -> Result<i64, TransferError> {
    let mut expected: BTreeMap<Oid, i64> =
        accounts.iter().map(|oid| (*oid, INITIAL_BALANCE)).collect();
    let mut tids = std::collections::BTreeSet::new();
    for commit in commits {
        if !tids.insert(commit.tid) {
            return Err(TransferError::DuplicateTid(commit.tid));
        }
        for (oid, delta) in &commit.deltas {
            *expected.get_mut(oid).ok_or(TransferError::UnknownAccount {
                tid: commit.tid,
                oid: *oid,
            })? += delta;
        }
    }
    let mut sum = 0;
    for (oid, value) in &expected {
        let (_, data) = client
            .load(*oid)
            .await
            .map_err(client_error("loading an account"))?
            .ok_or(TransferError::MissingAccount(*oid))?;
        let found = balance(*oid, &data)?;
        if found != *value {
            return Err(TransferError::WrongBalance {
                oid: *oid,
                expected: *value,
                found,
            });
        }
        sum += found;
    }
    let total = INITIAL_BALANCE * accounts.len() as i64;
    if sum != total {
        return Err(TransferError::SumChanged {
            expected: total,
            found: sum,
        });
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_round_trip_and_bad_data_is_an_error() {
        let oid = Oid(3);
        assert_eq!(balance(oid, &balance_data(-42)).ok(), Some(-42));
        assert!(matches!(
            balance(oid, &ObjectData::from(vec![1, 2, 3])),
            Err(TransferError::NotABalance { len: 3, .. })
        ));
    }
}
