//! Runs each program of `transport/examples/` once, as a user would, and checks it succeeds
//! within a bound. Cargo builds the examples with the tests, beside them in the target
//! directory.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(120);

fn example(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let profile = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary sits in <profile>/deps");
    profile.join("examples").join(name)
}

fn run(name: &str) {
    let path = example(name);
    assert!(path.exists(), "example {name} was not built at {path:?}");
    let mut child = Command::new(&path).spawn().expect("the example starts");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("the example's status") {
            assert!(status.success(), "example {name} failed: {status}");
            return;
        }
        if start.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("example {name} did not finish within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn request_response_runs() {
    run("request_response");
}

#[test]
fn object_transfer_runs() {
    run("object_transfer");
}

#[test]
fn multicast_delivery_runs() {
    run("multicast_delivery");
}

#[test]
fn fanout_auto_runs() {
    run("fanout_auto");
}
