//! The store lock: exclusive across processes, and released by the kernel when the holder is
//! killed with -9, so the next process is not blocked.

mod store_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use store_support::TempStore;

/// Kills and reaps the child on drop, also when an assertion fails.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn lock_holder_killed_with_sigkill_does_not_block_the_next_process() {
    let t = TempStore::new();
    let lock_path = t.store.root().join("lock");
    // Another process takes the same flock (util-linux flock(1) uses flock(2) as we do).
    // --no-fork: flock execs the shell, which execs sleep, so one pid holds the lock.
    let child = Command::new("flock")
        .args(["--no-fork", "-x"])
        .arg(&lock_path)
        .args(["sh", "-c", "echo locked; exec sleep 600"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run flock(1) from util-linux");
    let mut child = ChildGuard(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    assert!(
        t.store.try_lock().unwrap().is_none(),
        "the lock must be exclusive while another process holds it"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.0.wait().unwrap();
    let guard = t.store.lock().expect("lock after the holder died");
    drop(guard);
    assert!(t.store.try_lock().unwrap().is_some());
}

#[test]
fn lock_is_exclusive_within_and_across_store_handles() {
    let t = TempStore::new();
    let held = t.store.lock().unwrap();
    let other = rbuild_layerfs::Store::open(t.store.root()).unwrap();
    assert!(other.try_lock().unwrap().is_none());
    drop(held);
    assert!(other.try_lock().unwrap().is_some());
}
