//! CLI: `kill -9` of an import at 20 random moments; after each, `system check` reports a
//! consistent store (the dead process's incomplete work is cleaned up by the next process).
//! Two concurrent imports to the same tag leave one complete image.

mod common;

use common::{describe, rbuild_bin, TestRoot};
use rand::Rng;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A small rootfs (some files, dirs and symlinks) so that each import is quick.
fn small_rootfs(dir: &Path) {
    let mut rng = rand::rng();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("../etc/passwd", dir.join("data/link")).unwrap();
    for i in 0..30 {
        let mut buf = vec![0u8; 8 * 1024];
        rng.fill(&mut buf[..]);
        std::fs::write(dir.join(format!("data/f{i}")), buf).unwrap();
    }
}

/// Kills and reaps the child on drop.
struct Killer(Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_import(root: &Path, src: &Path, name: &str) -> Child {
    Command::new(rbuild_bin())
        .arg("--root")
        .arg(root)
        .arg("import")
        .arg(src)
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rbuild import")
}

#[test]
fn kill_9_of_import_at_random_moments_leaves_a_consistent_store() {
    let t = TestRoot::new();
    let src = tempfile::tempdir().unwrap();
    small_rootfs(src.path());

    // How long one import takes here, to spread the kills over its whole duration.
    let start = Instant::now();
    let status = spawn_import(t.path(), src.path(), "warmup").wait().unwrap();
    assert!(status.success());
    let full = start.elapsed().max(Duration::from_millis(20));

    let mut rng = rand::rng();
    let mut interrupted = 0;
    for round in 0..20 {
        let delay = full.mul_f64(rng.random_range(0.0..1.0));
        let mut child = Killer(spawn_import(
            t.path(),
            src.path(),
            &format!("crash:{round}"),
        ));
        std::thread::sleep(delay);
        let _ = child.0.kill(); // SIGKILL
        let _ = child.0.wait();
        drop(child);
        let args = ["system", "check"];
        let out = t.rbuild(&args);
        assert!(
            out.status.success(),
            "round {round} (killed after {delay:?}):\n{}",
            describe(&args, &out)
        );
        if String::from_utf8_lossy(&out.stdout).contains("incomplete item") {
            interrupted += 1;
        }
    }
    eprintln!("{interrupted} of 20 kills left incomplete work that the next process removed");
    // The store still works: a full import succeeds and nothing is left in tmp/.
    let status = spawn_import(t.path(), src.path(), "after").wait().unwrap();
    assert!(status.success());
    t.ok(&["inspect", "after"]);
    t.ok(&["system", "check"]);
    let leftovers: Vec<_> = std::fs::read_dir(t.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "tmp/ not cleaned: {leftovers:?}");
}

#[test]
fn two_concurrent_imports_to_the_same_tag_leave_one_complete_image() {
    let t = TestRoot::new();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    small_rootfs(a.path());
    small_rootfs(b.path());
    std::fs::write(a.path().join("which"), "a").unwrap();
    std::fs::write(b.path().join("which"), "b").unwrap();
    let mut ca = Killer(spawn_import(t.path(), a.path(), "shared:tag"));
    let mut cb = Killer(spawn_import(t.path(), b.path(), "shared:tag"));
    assert!(ca.0.wait().unwrap().success());
    assert!(cb.0.wait().unwrap().success());

    let doc: serde_json::Value = serde_json::from_str(&t.ok(&["inspect", "shared:tag"])).unwrap();
    assert_eq!(doc.as_array().unwrap().len(), 1);
    assert_eq!(doc[0]["RepoTags"], serde_json::json!(["shared:tag"]));
    let tags = t.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(
        tags.lines().filter(|l| *l == "shared:tag").count(),
        1,
        "{tags}"
    );
    // The tagged image is complete: it mounts and has one of the two contents.
    let mounted = t.ok(&["mount", "shared:tag"]);
    let which = std::fs::read_to_string(Path::new(mounted.trim()).join("which")).unwrap();
    assert!(which == "a" || which == "b");
    t.ok(&["umount", "shared:tag"]);
    t.ok(&["system", "check"]);
}

#[test]
fn kill_9_of_load_at_random_moments_leaves_a_consistent_store() {
    let source = TestRoot::new();
    let src = tempfile::tempdir().unwrap();
    small_rootfs(src.path());
    assert!(spawn_import(source.path(), src.path(), "app:1")
        .wait()
        .unwrap()
        .success());
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("app.tar");
    source.ok(&["save", "-o", archive.to_str().unwrap(), "app:1"]);

    let t = TestRoot::new();
    let spawn_load = || {
        Command::new(rbuild_bin())
            .arg("--root")
            .arg(t.path())
            .args(["load", "-i"])
            .arg(&archive)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rbuild load")
    };
    let start = Instant::now();
    assert!(spawn_load().wait().unwrap().success());
    let full = start.elapsed().max(Duration::from_millis(20));
    t.ok(&["rmi", "app:1"]);
    t.ok(&["system", "prune"]);

    let mut rng = rand::rng();
    for round in 0..10 {
        let delay = full.mul_f64(rng.random_range(0.0..1.0));
        let mut child = Killer(spawn_load());
        std::thread::sleep(delay);
        let _ = child.0.kill();
        let _ = child.0.wait();
        drop(child);
        let args = ["system", "check"];
        let out = t.rbuild(&args);
        assert!(
            out.status.success(),
            "round {round} (killed after {delay:?}):\n{}",
            describe(&args, &out)
        );
        // Whatever the kill left, a tag only ever names a complete image.
        if t.rbuild(&["inspect", "app:1"]).status.success() {
            let mounted = t.ok(&["mount", "app:1"]);
            assert!(Path::new(mounted.trim()).join("etc/passwd").is_file());
            t.ok(&["umount", "app:1"]);
        }
    }
    assert!(spawn_load().wait().unwrap().success());
    t.ok(&["inspect", "app:1"]);
    t.ok(&["system", "check"]);
}

/// Rewrites the boot id of every line of the store's journal of unsynced layers to a fake
/// earlier boot, as if the machine had crashed and rebooted since those layers were published.
fn pretend_reboot(root: &Path) {
    let journal = root.join("state/unsynced");
    let text: String = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(|l| {
            let (_, rest) = l.split_once(' ').unwrap();
            format!("00000000-0000-4000-8000-0000000000aa {rest}\n")
        })
        .collect();
    assert!(!text.is_empty(), "the import listed its layer");
    std::fs::write(&journal, text).unwrap();
}

/// Power loss after an import (simulated: a file of the unpacked layer truncated to 0 bytes and
/// the journal's boot id from an earlier boot): the next command re-creates the layer from its
/// blob and says so; a layer whose blob is gone cannot be, and `system check` names it.
#[test]
fn layer_damaged_by_a_power_loss_is_recreated_by_the_next_command() {
    let t = TestRoot::new();
    let src = tempfile::tempdir().unwrap();
    small_rootfs(src.path());
    t.ok(&["import", src.path().to_str().unwrap(), "app:1"]);
    let layers: Vec<_> = std::fs::read_dir(t.path().join("layers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(layers.len(), 1);
    let layer = &layers[0];
    std::fs::OpenOptions::new()
        .write(true)
        .open(layer.join("data/f3"))
        .unwrap()
        .set_len(0)
        .unwrap();
    pretend_reboot(t.path());

    let out = t.rbuild(&["images"]);
    assert!(out.status.success(), "{}", describe(&["images"], &out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("re-created 1 layer(s) published before the last reboot"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(layer.join("data/f3")).unwrap(),
        std::fs::read(src.path().join("data/f3")).unwrap()
    );
    t.ok(&["system", "check"]);
    let quiet = t.rbuild(&["images"]);
    assert!(
        quiet.stderr.is_empty(),
        "nothing to say when nothing was done"
    );

    // The same with the layer blob gone: the layer is kept and reported.
    let blob = std::fs::read_dir(t.path().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap())
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    std::fs::remove_file(&blob).unwrap();
    std::fs::write(
        t.path().join("state/unsynced"),
        format!("x 1 {} -\n", layer.file_name().unwrap().to_str().unwrap()),
    )
    .unwrap();
    let out = t.rbuild(&["system", "check"]);
    assert!(
        !out.status.success(),
        "{}",
        describe(&["system", "check"], &out)
    );
    let problems = String::from_utf8_lossy(&out.stdout);
    let name = format!("layers/{}", layer.file_name().unwrap().to_str().unwrap());
    assert!(
        problems
            .lines()
            .any(|l| l.contains(&name) && l.contains("could not be re-created")),
        "{problems}"
    );
    assert!(layer.is_dir(), "the only copy of the layer is kept");
}
