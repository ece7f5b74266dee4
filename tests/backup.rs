//! `replicast backup`, `backup verify` and `restore` against clusters of processes: a backup
//! taken while a writer goes on, then an incremental one that adds exactly the transactions
//! committed after the first one's TID; restored into a new, empty cluster, every object reads
//! back with the same serial and content as in the source; a backup directory with a truncated
//! or an altered file is refused by `verify` and by `restore`, naming the file. After a restore,
//! new objects get ids no restored object has and TIDs after the restored ones, also after every
//! master restarted (the raised next id is in the masters' log). A standing backup (`--follow`)
//! follows a writer, catches up with its last commit, and stops on SIGTERM with a manifest that
//! `verify` accepts, holding every commit once; meanwhile `replicast status` shows it behind
//! while it is frozen (and stale once its reports stop), caught up with no lag after the
//! writer stopped, and stopped at the end. A follower with a client's certificate is refused
//! by the master and exits, naming the role it needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use replicast_testkit::process::replicas::{all_up_to_date, wait_for_table};
use replicast_testkit::process::{self, ClusterSpec, LocalCluster, Outcome, binary};
use serde_json::Value;

/// Objects written before the first backup.
const OBJECTS: u64 = 24;
/// The most objects the writer writes while the first backup runs.
const WRITER_OBJECTS: u64 = 40;

fn replicast(args: &[&str]) -> Outcome {
    process::output(
        Command::new(binary()).args(args),
        &format!("replicast {args:?}"),
    )
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn manifest(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("a manifest");
    serde_json::from_str(&text).expect("the manifest is JSON")
}

fn tid_of(value: &Value) -> u64 {
    u64::from_str_radix(value.as_str().expect("a TID string"), 16).expect("16 hex digits")
}

/// A copy of backup directory `dir` at `to`.
fn copy_dir(dir: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(dir).expect("list the backup") {
        let entry = entry.expect("an entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a file");
    }
}

/// The largest data file of the manifest in `dir`.
fn largest_file(dir: &Path) -> PathBuf {
    let manifest = manifest(dir);
    let file = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .max_by_key(|file| file["bytes"].as_u64().expect("bytes"))
        .expect("a file")["name"]
        .as_str()
        .expect("a name")
        .to_owned();
    dir.join(file)
}

#[test]
fn a_backup_taken_while_writing_is_extended_restored_identically_and_damage_is_refused() {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let backup = scratch.path().join("backup");
    let source = LocalCluster::start(&ClusterSpec::default());
    let client = source.client_config("client-1", "");
    let writer_config = source.client_config("client-2", "");
    let admin = source.admin_config();
    for oid in 1..=OBJECTS {
        process::put(&client, oid, &format!("object-{oid}"));
    }
    for oid in [2, 7, 11] {
        process::put(&client, oid, &format!("object-{oid}-v2"));
    }

    // The first backup runs while another client commits.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut tids = Vec::new();
            for oid in 1000..1000 + WRITER_OBJECTS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tids.push(
                    u64::from_str_radix(
                        &process::put(&writer_config, oid, &format!("written-{oid}")),
                        16,
                    )
                    .expect("a TID"),
                );
            }
            tids
        })
    };
    let first = replicast(&["backup", "--config", path(&admin), "--to", path(&backup)]);
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("the writer ends");
    assert_eq!(first.code, Some(0), "{}\n{}", first.stdout, first.stderr);
    let first_manifest = manifest(&backup);
    let first_tid = tid_of(&first_manifest["tid"]);
    let first_files = first_manifest["files"].as_array().expect("files").len();
    assert_eq!(first_manifest["partitions"], 12);
    assert_eq!(first_files, 12, "one file per partition");

    // More commits, then the backup again: it adds exactly the transactions after its TID.
    for oid in [3, OBJECTS + 1] {
        process::put(&client, oid, &format!("object-{oid}-late"));
    }
    let second = replicast(&["backup", "--config", path(&admin), "--to", path(&backup)]);
    assert_eq!(second.code, Some(0), "{}\n{}", second.stdout, second.stderr);
    let second_manifest = manifest(&backup);
    let second_tid = tid_of(&second_manifest["tid"]);
    assert!(second_tid > first_tid);
    let files = second_manifest["files"].as_array().expect("files");
    assert_eq!(files.len(), 24, "a file per partition and run");
    let added: u64 = files[first_files..]
        .iter()
        .map(|file| file["transactions"].as_u64().expect("a count"))
        .sum();
    // Every commit of this test writes one object: one partition's transaction each.
    let later_by_writer = written.iter().filter(|tid| **tid > first_tid).count() as u64;
    assert_eq!(added, later_by_writer + 2, "{second_manifest:#}");

    let verified = replicast(&["backup", "verify", path(&backup)]);
    assert_eq!(verified.code, Some(0), "{}", verified.stderr);

    // What the source holds, read back through a client.
    let mut oids: Vec<u64> = (1..=OBJECTS + 1).collect();
    oids.extend((0..written.len() as u64).map(|index| 1000 + index));
    let expected: BTreeMap<u64, (String, String)> = oids
        .iter()
        .map(|oid| (*oid, process::get(&client, *oid)))
        .collect();
    source.stop();

    // A truncated file and an altered one are refused, by name.
    let truncated = scratch.path().join("truncated");
    copy_dir(&backup, &truncated);
    let victim = largest_file(&truncated);
    let length = std::fs::metadata(&victim).expect("a file").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .and_then(|file| file.set_len(length / 2))
        .expect("truncate");
    let name = victim
        .file_name()
        .and_then(|name| name.to_str())
        .expect("a name")
        .to_owned();
    let refused = replicast(&["backup", "verify", path(&truncated)]);
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(
        refused.stderr.contains(&name) && refused.stderr.contains("truncated"),
        "{}",
        refused.stderr
    );
    let altered = scratch.path().join("altered");
    copy_dir(&backup, &altered);
    let victim = largest_file(&altered);
    let mut bytes = std::fs::read(&victim).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&victim, bytes).expect("alter");
    let refused = replicast(&["backup", "verify", path(&altered)]);
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(
        refused.stderr.contains(&name) && refused.stderr.contains("altered"),
        "{}",
        refused.stderr
    );

    // Restored into a new, empty cluster: the same serials and contents.
    let target = LocalCluster::start(&ClusterSpec::default());
    let target_client = target.client_config("client-1", "");
    let refused = replicast(&[
        "restore",
        "--from",
        path(&truncated),
        "--config",
        path(&target_client),
    ]);
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(refused.stderr.contains(&name), "{}", refused.stderr);
    let restored = replicast(&[
        "restore",
        "--from",
        path(&backup),
        "--config",
        path(&target_client),
    ]);
    assert_eq!(
        restored.code,
        Some(0),
        "{}\n{}",
        restored.stdout,
        restored.stderr
    );
    for (oid, (serial, data)) in &expected {
        assert_eq!(
            &process::get(&target_client, *oid),
            &(serial.clone(), data.clone()),
            "object {oid}"
        );
    }
    // Restoring into a cluster that is no longer empty is refused.
    let again = replicast(&[
        "restore",
        "--from",
        path(&backup),
        "--config",
        path(&target_client),
    ]);
    assert_eq!(again.code, Some(1), "{}", again.stdout);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);
    target.stop();
}

#[test]
fn an_interrupted_backup_resumes_to_its_own_tid() {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let backup = scratch.path().join("backup");
    let mut cluster = LocalCluster::start(&ClusterSpec::default());
    let client = cluster.client_config("client-1", "");
    let admin = cluster.admin_config();
    for oid in 1..=OBJECTS {
        process::put(&client, oid, &format!("object-{oid}"));
    }
    // Stop both holders of partition 0: the partitions they share are served by nobody, the
    // others by the third storage.
    let table = replicast_testkit::process::replicas::cells(&admin);
    let holders = |partition: usize| -> Vec<String> {
        let mut names: Vec<String> = table[partition]
            .iter()
            .map(|(storage, _)| storage.clone())
            .collect();
        names.sort();
        names
    };
    let stopped = holders(0);
    let shared: Vec<usize> = (0..table.len())
        .filter(|partition| holders(*partition) == stopped)
        .collect();
    assert!(shared.len() < table.len(), "{table:?}");
    for name in &stopped {
        cluster.storage(name).stop();
    }
    let interrupted = replicast(&["backup", "--config", path(&admin), "--to", path(&backup)]);
    assert_eq!(interrupted.code, Some(1), "{}", interrupted.stdout);
    for partition in &shared {
        assert!(
            interrupted
                .stderr
                .contains(&format!("partition {partition}: no readable replica")),
            "{}",
            interrupted.stderr
        );
    }
    assert!(
        interrupted.stderr.contains("run again to resume"),
        "{}",
        interrupted.stderr
    );
    assert!(
        !backup.join("manifest.json").exists(),
        "no backup is complete yet"
    );
    let partial: Value = serde_json::from_str(
        &std::fs::read_to_string(backup.join("partial.json")).expect("partial.json"),
    )
    .expect("JSON");
    assert_eq!(
        partial["files"].as_array().expect("files").len(),
        table.len() - shared.len(),
        "{partial:#}"
    );

    for name in &stopped {
        cluster.start_storage(name);
    }
    replicast_testkit::process::replicas::wait_for_table(
        &admin,
        "the stopped storages are back",
        replicast_testkit::process::replicas::all_up_to_date,
    );
    process::put(&client, 1, "after the interruption");
    let resumed = replicast(&["backup", "--config", path(&admin), "--to", path(&backup)]);
    assert_eq!(
        resumed.code,
        Some(0),
        "{}\n{}",
        resumed.stdout,
        resumed.stderr
    );
    let fetched = resumed
        .stdout
        .lines()
        .filter(|line| line.starts_with("partition "))
        .count();
    assert_eq!(fetched, shared.len(), "{}", resumed.stdout);
    let done = manifest(&backup);
    assert_eq!(done["tid"], partial["tid"], "resumed to its own TID");
    assert_eq!(done["files"].as_array().expect("files").len(), table.len());
    assert!(!backup.join("partial.json").exists());
    let verified = replicast(&["backup", "verify", path(&backup)]);
    assert_eq!(verified.code, Some(0), "{}", verified.stderr);
    // Run again: only the commit after the interrupted run's TID is added.
    let again = replicast(&["backup", "--config", path(&admin), "--to", path(&backup)]);
    assert_eq!(again.code, Some(0), "{}\n{}", again.stdout, again.stderr);
    let extended = manifest(&backup);
    let added: u64 = extended["files"].as_array().expect("files")[table.len()..]
        .iter()
        .map(|file| file["transactions"].as_u64().expect("a count"))
        .sum();
    assert_eq!(added, 1, "{extended:#}");
    cluster.stop();
}

/// A client of the process cluster whose configuration is `config`, in `runtime`.
fn connect(
    runtime: &tokio::runtime::Runtime,
    config: &Path,
) -> (
    replicast_node::driver::ClientHandle,
    replicast_transport::quic::Endpoint,
) {
    let config = replicast_node::config::NodeConfig::load(config).expect("a client config");
    runtime
        .block_on(replicast_node::driver::connect_from_config(
            &config,
            replicast_node::client::ClientConfig::default(),
            std::time::Duration::from_secs(30),
        ))
        .expect("connect")
}

#[test]
fn a_backup_during_transfers_restores_a_copy_where_the_bank_invariant_holds() {
    use replicast_node::ids::{Oid, Tid};
    use replicast_node::protocol::LoadBefore;
    use replicast_testkit::workload::transfers;

    const ACCOUNTS: u32 = 10;
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let backup = scratch.path().join("backup");
    let source = LocalCluster::start(&ClusterSpec::default());
    let admin = source.admin_config();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let (mut bank, _endpoint) = connect(&runtime, &source.client_config("client-1", ""));
    let accounts: Vec<Oid> = runtime
        .block_on(transfers::create_accounts(&mut bank, ACCOUNTS))
        .expect("accounts");

    // Transfers go on in rounds of 10 commits until the backup is done; the backup starts
    // once the first round committed.
    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started) = std::sync::mpsc::channel();
    let writer = {
        let (stop, accounts) = (stop.clone(), accounts.clone());
        thread::spawn(move || {
            let mut commits = Vec::new();
            // Bounded: 200 rounds at most.
            for round in 0..200u64 {
                let run = runtime
                    .block_on(transfers::run(&mut bank, &accounts, 10, round + 1))
                    .expect("transfers");
                commits.extend(run.commits);
                if round == 0 {
                    started_tx.send(()).expect("the test waits");
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            runtime.block_on(bank.close()).expect("close");
            commits
        })
    };
    started.recv().expect("the first round committed");
    let taken = replicast(&["backup", "--config", path(&admin), "--to", path(&backup)]);
    stop.store(true, Ordering::Relaxed);
    let commits = writer.join().expect("the writer ends");
    assert_eq!(taken.code, Some(0), "{}\n{}", taken.stdout, taken.stderr);
    let tid = Tid(tid_of(&manifest(&backup)["tid"]));
    let before_backup = commits.iter().filter(|commit| commit.tid <= tid).count();
    assert!(before_backup >= 10, "the first round is in the backup");

    // Each account as the source held it at the backup's TID.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let (reader, _endpoint) = connect(&runtime, &source.client_config("client-2", ""));
    let at_backup: Vec<(Oid, Tid, i64)> = accounts
        .iter()
        .map(|oid| {
            match runtime
                .block_on(reader.load_before(*oid, Tid(tid.0 + 1)))
                .expect("load before")
            {
                LoadBefore::Found { data, serial, .. } => (
                    *oid,
                    serial,
                    transfers::balance(*oid, &data).expect("a balance"),
                ),
                other => panic!("account {oid} at the backup's TID: {other:?}"),
            }
        })
        .collect();
    runtime.block_on(reader.close()).expect("close");
    source.stop();

    // The copy runs three masters: their log is what must hold the raised object id.
    let mut target = LocalCluster::start(&ClusterSpec::three_masters());
    let target_client = target.client_config("client-1", "");
    let status = target.client_config("client-4", "");
    let restored = replicast(&[
        "restore",
        "--from",
        path(&backup),
        "--config",
        path(&target_client),
    ]);
    assert_eq!(
        restored.code,
        Some(0),
        "{}\n{}",
        restored.stdout,
        restored.stderr
    );
    let (mut copy, _endpoint) = connect(&runtime, &target_client);
    assert_restored(&runtime, &copy, &at_backup);

    // New objects in the copy get ids no restored object has (a store of a new object at a
    // restored id would conflict: its serial is not the new object's 0), and their commit a
    // TID after every restored one; the restored objects keep their data.
    let restored_max = *accounts.iter().max().expect("accounts");
    let fresh = runtime
        .block_on(transfers::create_accounts(&mut copy, 4))
        .expect("new objects in the restored copy commit without a conflict");
    assert!(
        fresh.iter().all(|oid| *oid > restored_max),
        "new ids {fresh:?} above the restored ones (up to {restored_max})"
    );
    let fresh_serial = serial_of(&runtime, &copy, fresh[0]);
    assert!(
        fresh_serial > tid,
        "commit {fresh_serial} after the restored {tid}"
    );
    assert_restored(&runtime, &copy, &at_backup);
    runtime.block_on(copy.close()).expect("close");

    // Every node stops and starts again: the masters' state comes from their log only.
    target.restart_every_node();
    wait_for_table(
        &status,
        "every cell up to date after the restart",
        all_up_to_date,
    );
    let (mut copy, _endpoint) = connect(&runtime, &target_client);
    let later = runtime
        .block_on(transfers::create_accounts(&mut copy, 4))
        .expect("new objects after the restart commit without a conflict");
    let fresh_max = *fresh.iter().max().expect("fresh ids");
    assert!(
        later.iter().all(|oid| *oid > fresh_max),
        "ids {later:?} after the restart above every earlier one (up to {fresh_max})"
    );
    assert!(serial_of(&runtime, &copy, later[0]) > fresh_serial);
    assert_restored(&runtime, &copy, &at_backup);
    for oid in &fresh {
        assert_eq!(
            serial_of(&runtime, &copy, *oid),
            fresh_serial,
            "object {oid}"
        );
    }
    runtime.block_on(copy.close()).expect("close");
    target.stop();
}

/// Every account in `expected` reads back from `copy` with its serial and balance, and the
/// balances sum to the bank's total.
fn assert_restored(
    runtime: &tokio::runtime::Runtime,
    copy: &replicast_node::driver::ClientHandle,
    expected: &[(replicast_node::ids::Oid, replicast_node::ids::Tid, i64)],
) {
    use replicast_testkit::workload::transfers;
    let mut sum = 0;
    for (oid, serial, balance) in expected {
        let (copied_serial, data) = runtime
            .block_on(copy.load(*oid))
            .expect("load")
            .expect("the account is in the copy");
        assert_eq!(
            (
                copied_serial,
                transfers::balance(*oid, &data).expect("a balance")
            ),
            (*serial, *balance),
            "account {oid} as at the backup's TID"
        );
        sum += balance;
    }
    assert_eq!(sum, expected.len() as i64 * transfers::INITIAL_BALANCE);
}

/// The serial of the current revision of `oid`.
fn serial_of(
    runtime: &tokio::runtime::Runtime,
    client: &replicast_node::driver::ClientHandle,
    oid: replicast_node::ids::Oid,
) -> replicast_node::ids::Tid {
    runtime
        .block_on(client.load(oid))
        .expect("load")
        .unwrap_or_else(|| panic!("object {oid} exists"))
        .0
}

/// `DIR/follow.json`, once the follower wrote it.
fn follow_status(dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join("follow.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Waits (bounded by `process::WAIT`) until the follower's status file satisfies `done`.
fn wait_follow(dir: &Path, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + process::WAIT;
    loop {
        if let Some(status) = follow_status(dir).filter(|status| done(status)) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {:?}: {:?}",
            process::WAIT,
            follow_status(dir)
        );
        // A pause between two looks at the file, not a synchronization: its content decides.
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The standing backup of directory `dir` in `replicast status --json` (with `config`), if the
/// master lists it.
fn backup_in_status(config: &Path, dir: &Path) -> Option<Value> {
    let outcome = replicast(&["status", "--json", "--config", path(config)]);
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
    let status: Value = serde_json::from_str(&outcome.stdout).expect("status is JSON");
    let directory = std::path::absolute(dir).expect("an absolute path");
    status["backups"]
        .as_array()
        .expect("a list of backups")
        .iter()
        .find(|backup| backup["directory"] == path(&directory))
        .cloned()
}

/// Waits (bounded by `process::WAIT`) until `replicast status` shows the backup of `dir` so
/// that `done` holds.
fn wait_status(config: &Path, dir: &Path, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + process::WAIT;
    loop {
        if let Some(backup) = backup_in_status(config, dir).filter(|backup| done(backup)) {
            return backup;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {:?}: {:?}",
            process::WAIT,
            backup_in_status(config, dir)
        );
        // A pause between two questions, not a synchronization: the answer decides.
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Sends `signal` to the child `process`.
fn signal(process: &std::process::Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(process.id()).expect("a pid");
    // SAFETY: a plain kill(2) of a child this test started and has not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

#[test]
fn a_standing_backup_follows_a_writer_catches_up_and_stops_cleanly_on_sigterm() {
    const BEFORE: u64 = 5;
    const WRITTEN: u64 = 20;
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let backup = scratch.path().join("backup");
    let source = LocalCluster::start(&ClusterSpec::default());
    let client = source.client_config("client-1", "");
    let admin = source.admin_config();
    for oid in 1..=BEFORE {
        process::put(&client, oid, &format!("object-{oid}"));
    }
    let log = |name: &str| {
        std::process::Stdio::from(std::fs::File::create(scratch.path().join(name)).expect("a log"))
    };
    let mut follower = Command::new(binary())
        .args(["backup", "--follow", "--interval", "100", "--rate", "50000"])
        .args(["--config", path(&admin), "--to", path(&backup)])
        .stdin(std::process::Stdio::null())
        .stdout(log("follow.out"))
        .stderr(log("follow.err"))
        .spawn()
        .expect("start the follower");
    // A follower with a client's certificate: the master refuses its report, and it exits at
    // once, naming the role it needs. The master shows no such backup.
    let refused_dir = scratch.path().join("refused");
    let refused = replicast(&[
        "backup",
        "--follow",
        "--interval",
        "100",
        "--config",
        path(&client),
        "--to",
        path(&refused_dir),
    ]);
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("ReportBackup needs the role admin; the sender's certificate grants client"),
        "{}",
        refused.stderr
    );

    let first = wait_follow(&backup, "the first round", |status| {
        status["rounds"].as_u64() >= Some(1)
    });
    assert_eq!(first["rate"], 50000);
    let first_tid = first["backup_tid"].as_str().expect("a TID").to_owned();
    let shown = wait_status(&admin, &backup, "the first round reported", |backup| {
        backup["backup_tid"] == first_tid.as_str()
    });
    assert_eq!(shown["name"], "admin");
    assert_eq!(shown["rate"], 50000);
    assert!(backup_in_status(&admin, &refused_dir).is_none());

    // Frozen, it reports no more: the master shows it behind the commits made meanwhile,
    // then stale.
    signal(&follower, libc::SIGSTOP);
    let mut frozen_last = String::new();
    for oid in 1..=3 {
        frozen_last = process::put(&client, 1000 + oid, "while frozen");
    }
    let behind = backup_in_status(&admin, &backup).expect("still listed");
    assert!(
        tid_of(&behind["backup_tid"]) < tid_of(&Value::from(frozen_last.as_str())),
        "{behind}"
    );
    assert_eq!(behind["caught_up"], false, "{behind}");
    assert!(
        behind["behind_seconds"].as_f64().expect("seconds") > 0.0,
        "{behind}"
    );
    let stale = wait_status(&admin, &backup, "stale while frozen", |backup| {
        backup["stale"] == true
    });
    assert_eq!(stale["caught_up"], false, "{stale}");
    signal(&follower, libc::SIGCONT);

    // A writer commits while the follower runs.
    let mut last = String::new();
    for oid in 1..=WRITTEN {
        last = process::put(&client, BEFORE + oid, &format!("written-{oid}"));
    }
    let caught_up = wait_follow(&backup, "caught up with the writer", |status| {
        status["backup_tid"] == last.as_str() && status["caught_up"] == true
    });
    assert_eq!(caught_up["cluster_last_tid"], last.as_str());
    assert_eq!(caught_up["seconds_behind"], 0.0);
    assert!(
        caught_up["rounds"].as_u64() >= Some(2),
        "it followed in rounds after the first: {caught_up}"
    );
    let shown = replicast(&["backup", "status", path(&backup)]);
    assert_eq!(shown.code, Some(0), "{}", shown.stderr);
    assert!(
        shown.stdout.contains(&last) && shown.stdout.contains("caught up"),
        "{}",
        shown.stdout
    );
    // The writer stopped: the master shows the backup at its last commit, with no lag.
    let caught_up = wait_status(&admin, &backup, "caught up in status", |backup| {
        backup["backup_tid"] == last.as_str()
    });
    assert_eq!(caught_up["caught_up"], true, "{caught_up}");
    assert_eq!(caught_up["behind_seconds"], 0.0, "{caught_up}");
    assert_eq!(caught_up["stale"], false, "{caught_up}");
    assert_eq!(caught_up["state"], "following", "{caught_up}");
    assert_eq!(caught_up["error"], Value::Null, "{caught_up}");
    let human = replicast(&["status", "--config", path(&admin)]);
    assert!(
        human.stdout.contains("BACKUPS") && human.stdout.contains(&last),
        "{}",
        human.stdout
    );

    // SIGTERM: it stops (bounded wait), exit 0, the manifest consistent at the last commit.
    signal(&follower, libc::SIGTERM);
    let deadline = std::time::Instant::now() + process::WAIT;
    let exit = loop {
        if let Some(exit) = follower.try_wait().expect("wait for the follower") {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the follower did not stop"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(scratch.path().join("follow.err")).unwrap_or_default();
    assert!(exit.success(), "{exit:?}: {stderr}");
    let stdout = std::fs::read_to_string(scratch.path().join("follow.out")).expect("its output");
    assert!(stdout.contains("stopped following"), "{stdout}");
    assert_eq!(
        follow_status(&backup).expect("a status")["state"],
        "stopped"
    );
    let manifest = manifest(&backup);
    assert_eq!(manifest["tid"], last.as_str());
    // Every commit exactly once: one put is one transaction in one partition.
    let transactions: u64 = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|file| file["transactions"].as_u64().expect("a count"))
        .sum();
    assert_eq!(transactions, BEFORE + 3 + WRITTEN, "{manifest:#}");
    // The master shows it stopped, not stale.
    let stopped = backup_in_status(&admin, &backup).expect("still listed");
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert_eq!(stopped["stale"], false, "{stopped}");
    let verified = replicast(&["backup", "verify", path(&backup)]);
    assert_eq!(verified.code, Some(0), "{}", verified.stderr);
    let leftovers: Vec<String> = std::fs::read_dir(&backup)
        .expect("list the backup")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".tmp") || name == "partial.json")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    source.stop();
}
