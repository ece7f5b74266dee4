//! `replicast master-log --config FILE show | set-members`: a stopped master's replicated log,
//! read and (for a change of the masters) given new members.
//!
//! Raft changes the members of a running group only through its own membership changes,
//! which replicast does not propose. What it supports instead is changing the masters of a
//! stopped group: every master starts again from a copy of the most up-to-date log (the
//! greatest last term, then the greatest last index, as `show` prints them), with the new
//! members set in every copy. All copies being identical, the new group holds everything the
//! old one committed. docs/DEPLOY.md gives the procedure.
//!
//! Both subcommands open the log file itself, so the master must be stopped (a running master
//! holds the file: the command then fails, saying so).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use replicast_node::config::{NodeConfig, RoleConfig};
use replicast_node::consensus::{RaftLog, raft_id};

use super::Error;

/// The long help of `replicast master-log` (`--help`).
const HELP: &str = "\
The master must be stopped: the command opens its log file (`master.path` of FILE).

`show` prints the log's members, the term raft last stored and the last entry's term and index. \
Of several masters' logs, the most up to date has the greatest last term, then the greatest last \
index: that is the copy to start a changed group from (docs/DEPLOY.md, section 6).

`set-members` makes the log's members the masters FILE lists (`[masters]`, or the master alone). \
A master refuses to start when its log's members are not its configuration's, so changing \
`[masters]` in the configurations only is caught.";

/// Arguments of `replicast master-log`; `--help` shows [`HELP`].
#[derive(Debug, Args)]
#[command(after_long_help = HELP)]
pub struct MasterLogArgs {
    /// The master's configuration file (for its log's path and the masters it lists).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[command(subcommand)]
    command: MasterLogCommand,
}

impl MasterLogArgs {
    /// The configuration file given.
    pub fn config(&self) -> &std::path::Path {
        &self.config
    }
}

#[derive(Debug, Subcommand)]
enum MasterLogCommand {
    /// Print the log's path, members, stored term, last term and last index, commit index
    /// and snapshot index, one `KEY VALUE` line each.
    Show,
    /// Make the log's members the masters the configuration lists.
    SetMembers,
}

/// Runs `replicast master-log`.
pub fn run(args: MasterLogArgs) -> Result<(), Error> {
    let config = NodeConfig::load(&args.config)?;
    if !matches!(config.role, RoleConfig::Master { .. }) {
        return Err(format!("{} is not a master's configuration", args.config.display()).into());
    }
    let settings = config
        .master_settings
        .as_ref()
        .ok_or_else(|| format!("{}: no [master] settings", args.config.display()))?;
    let path = &settings.path;
    if !path.exists() {
        return Err(format!("{}: no master's log there", path.display()).into());
    }
    let masters: Vec<String> = config
        .masters
        .iter()
        .map(|master| master.name.as_str().to_owned())
        .collect();
    // Voters given here only fill a log that never stored its members.
    let voters: Vec<u64> = masters.iter().map(|name| raft_id(name)).collect();
    let mut log = RaftLog::open(path, &voters)
        .map_err(|e| format!("{e} (a running master holds its log: stop it first)"))?;
    if let MasterLogCommand::SetMembers = args.command {
        log.set_members(&masters)?;
    }
    let mut members: Vec<String> = log
        .membership()
        .voters
        .iter()
        .map(|id| {
            log.name_of(*id)
                .map(str::to_owned)
                .or_else(|| masters.iter().find(|name| raft_id(name) == *id).cloned())
                .unwrap_or_else(|| format!("{id:#x}"))
        })
        .collect();
    members.sort();
    println!("path {}", path.display());
    println!("members {}", members.join(","));
    println!("term {}", log.current_term());
    println!("last_term {}", log.last_term());
    println!("last_index {}", log.last());
    println!("commit {}", log.commit());
    println!("snapshot_index {}", log.snapshot_data().index);
    let format = log.state_format()?;
    println!(
        "state_format {}",
        format.map_or_else(|| "none".to_owned(), |format| format.to_string())
    );
    Ok(())
}
