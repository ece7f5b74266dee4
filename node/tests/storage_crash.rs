//! Kill -9 a process committing into a store, reopen the file: the last transaction is either
//! whole or absent, voted ones are pending, and committing resumes.
//!
//! The writer is this test binary itself, re-run with the same test selected and the store's
//! path in `REPLICAST_CRASH_STORE`, which turns the test into the writer.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use replicast_node::engine::Engine;
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::transaction::TransactionInfo;

const OBJECTS: u64 = 20;
const STORE_VARIABLE: &str = "REPLICAST_CRASH_STORE";

/// The content transaction `tid` writes to `oid`.
fn content(oid: Oid, tid: Tid) -> ObjectData {
    ObjectData::from(format!("{oid} written by {tid}").into_bytes())
}

/// Commits transactions of `OBJECTS` objects into the store at `path`, printing each TID once
/// finished, until killed (or 100,000 transactions).
fn run_writer(path: std::ffi::OsString) {
    let store = Engine::open(path).expect("open store");
    let mut serial = store.last_tid().expect("last tid");
    for _ in 0..100_000 {
        let (ttid, tid) = (Tid(serial.0 + 1), Tid(serial.0 + 2));
        for oid in (0..OBJECTS).map(Oid) {
            store
                .store_pending(ttid, oid, serial, content(oid, tid))
                .expect("store");
        }
        store.vote(ttid, &TransactionInfo::default()).expect("vote");
        println!("voted {ttid}");
        store.finish(ttid, tid).expect("finish");
        println!("finished {tid}");
        serial = tid;
    }
}

/// Runs the writer on `path` until it reported `finishes` commits, then kills it with SIGKILL.
fn run_and_kill(path: &Path, finishes: usize) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "killed_writer_leaves_whole_transactions",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(STORE_VARIABLE, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, received) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = 0;
    while seen < finishes {
        let line = received
            .recv_timeout(Duration::from_secs(60))
            .expect("the writer commits");
        if line.starts_with("finished ") {
            seen += 1;
        }
    }
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap the writer");
    drop(received);
    reader.join().expect("reader thread");
}

#[test]
fn killed_writer_leaves_whole_transactions() {
    if let Some(path) = std::env::var_os(STORE_VARIABLE) {
        // This process is the writer that the test below kills.
        return run_writer(path);
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("store.redb");
    let mut committed = Tid::ZERO;
    for (round, finishes) in [5, 13, 8].into_iter().enumerate() {
        run_and_kill(&path, finishes);
        let store = Engine::open(&path).expect("reopen after kill -9");
        let last = store.last_tid().expect("last tid");
        assert!(
            last.0 >= committed.0 + 2 * finishes as u64,
            "round {round}: every reported finish survived ({last} after {committed})"
        );
        // The last transaction is whole: every object is at its revision, with its content.
        for oid in (0..OBJECTS).map(Oid) {
            let revision = store.load(oid).expect("load").expect("committed object");
            assert_eq!(
                (revision.tid, revision.data),
                (last, content(oid, last)),
                "round {round}"
            );
        }
        let history = store
            .transactions_after(committed, usize::MAX)
            .expect("history");
        assert!(
            history
                .iter()
                .all(|transaction| transaction.oids.len() == OBJECTS as usize)
        );
        // A transaction caught between vote and finish is pending with all its objects; one
        // caught before its vote is gone.
        for pending in store.pending_transactions().expect("pending") {
            assert!(pending.voted, "unvoted transactions are dropped on open");
            assert_eq!(pending.ttid, Tid(last.0 + 1));
            assert_eq!(pending.oids.len(), OBJECTS as usize);
            // The master would say: not committed.
            store.abort(pending.ttid).expect("abort");
        }
        committed = last;
    }
}
