//! Power-loss fault injection for unpacked layer dirs: a published layer is listed in the
//! journal of unsynced layers (`state/unsynced`); after a "reboot" (the journal's boot id
//! rewritten to a fake earlier boot) with a file of the layer truncated to 0 bytes (what a lost
//! delayed allocation looks like), opening the store re-creates the layer from its blob. The
//! same damage under the current boot id is left alone (the normal open does no work), old
//! entries of this boot are compacted away, a `kill -9` in the middle of the recovery is
//! finished by the next open, and a layer that cannot be re-created is reported by
//! `system check`.

mod store_support;

use rbuild_layerfs::layer::{apply_layer, write_layer, ApplyLimits, WriteOptions};
use rbuild_layerfs::store::KILL_DURING_RECOVERY_ENV;
use rbuild_layerfs::{Digest, Store};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use store_support::{small_image, TempStore};

const FAKE_BOOT: &str = "00000000-0000-4000-8000-0000000000aa";

fn journal(store: &Store) -> PathBuf {
    store.root().join("state/unsynced")
}

fn journal_text(store: &Store) -> String {
    fs::read_to_string(journal(store)).unwrap_or_default()
}

/// Rewrites one field (0 = boot id, 1 = time) of every journal line.
fn set_field(store: &Store, field: usize, value: &str) {
    let text: String = journal_text(store)
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(' ').collect();
            f[field] = value;
            format!("{}\n", f.join(" "))
        })
        .collect();
    fs::write(journal(store), text).unwrap();
}

/// Lines of the journal that name `diff_id`.
fn listed(store: &Store, diff_id: &Digest) -> Vec<String> {
    journal_text(store)
        .lines()
        .filter(|l| l.contains(diff_id.hex()))
        .map(str::to_string)
        .collect()
}

/// Truncates a file of a layer to 0 bytes.
fn damage(path: &Path) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// Type, mode, owner, size and content (or link target) of every entry below `dir`.
fn listing(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.unwrap();
        let meta = entry.path().symlink_metadata().unwrap();
        let rel = entry.path().strip_prefix(dir).unwrap().to_path_buf();
        let kind = meta.file_type();
        let body = if kind.is_file() {
            format!("file {:?}", fs::read(entry.path()).unwrap())
        } else if kind.is_symlink() {
            format!("link {:?}", fs::read_link(entry.path()).unwrap())
        } else if kind.is_char_device() {
            format!("chr {}", meta.rdev())
        } else {
            "dir".to_string()
        };
        let line = format!(
            "{body} mode {:o} {}:{}",
            meta.mode(),
            meta.uid(),
            meta.gid()
        );
        out.insert(rel, line);
    }
    out
}

/// The layer dir compared with a fresh unpack of its blob.
fn assert_layer_matches_blob(store: &Store, diff_id: &Digest, blob: &Digest) {
    let fresh = tempfile::tempdir().unwrap();
    let dest = fresh.path().join("l");
    let stats = apply_layer(
        fs::File::open(store.blob_path(blob)).unwrap(),
        &dest,
        &ApplyLimits::default(),
    )
    .unwrap();
    assert_eq!(stats.diff_id, *diff_id);
    assert_eq!(listing(&store.layer_dir(diff_id)), listing(&dest));
}

/// Pretends the machine crashed and rebooted: every journal entry gets a fake earlier boot.
fn reboot(store: &Store) {
    set_field(store, 0, FAKE_BOOT);
}

#[test]
fn unpacked_layer_is_recreated_after_a_reboot() {
    let t = TempStore::new();
    let image = small_image(&t.store, "unpacked content");
    let (diff_id, blob) = (
        image.diff_ids()[0].clone(),
        image.layer_digests()[0].clone(),
    );
    let lines = listed(&t.store, &diff_id);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(blob.hex()),
        "the unpack names its blob: {lines:?}"
    );

    let layer = t.store.layer_dir(&diff_id);
    damage(&layer.join("etc/hello"));
    fs::remove_file(layer.join("bin/link")).unwrap();
    reboot(&t.store);

    let reopened = Store::open(t.store.root()).unwrap();
    assert_eq!(
        reopened.recovered_at_open().recreated,
        vec![diff_id.clone()]
    );
    assert_eq!(
        fs::read_to_string(layer.join("etc/hello")).unwrap(),
        "unpacked content"
    );
    assert_layer_matches_blob(&reopened, &diff_id, &blob);
    assert_eq!(journal_text(&reopened), "", "the journal is cleared");
    assert!(reopened.check().unwrap().is_consistent());
}

/// The pull path publishes with `commit_layer_dir`, which does not name the blob: recovery
/// finds it through the image's manifest and config.
#[test]
fn layer_published_without_its_blob_is_found_through_the_manifest() {
    let t = TempStore::new();
    let image = small_image(&t.store, "pulled");
    let (diff_id, blob) = (
        image.diff_ids()[0].clone(),
        image.layer_digests()[0].clone(),
    );
    fs::remove_dir_all(t.store.layer_dir(&diff_id)).unwrap();
    fs::write(journal(&t.store), "").unwrap();
    let scratch = t.store.scratch_dir("pull").unwrap();
    let dest = scratch.path().join("layer");
    apply_layer(
        t.store.open_blob(&blob).unwrap(),
        &dest,
        &ApplyLimits::default(),
    )
    .unwrap();
    t.store.commit_layer_dir(&dest, &diff_id).unwrap();
    let lines = listed(&t.store, &diff_id);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].ends_with(" -"), "no blob named: {lines:?}");

    damage(&t.store.layer_dir(&diff_id).join("etc/hello"));
    reboot(&t.store);
    let reopened = Store::open(t.store.root()).unwrap();
    assert_eq!(
        reopened.recovered_at_open().recreated,
        vec![diff_id.clone()]
    );
    assert_layer_matches_blob(&reopened, &diff_id, &blob);
    assert_eq!(journal_text(&reopened), "");
}

#[test]
fn written_layer_is_recreated_after_a_reboot() {
    let t = TempStore::new();
    let upper = t.store.scratch_dir("upper").unwrap().keep();
    fs::create_dir(upper.join("app")).unwrap();
    fs::write(upper.join("app/data"), vec![7u8; 100_000]).unwrap();
    fs::write(upper.join("app/small"), "small").unwrap();
    let want = listing(&upper);
    let info = t
        .store
        .commit_upper(&upper, &WriteOptions::default())
        .unwrap();
    let lines = listed(&t.store, &info.diff_id);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(info.digest.hex()), "{lines:?}");

    let layer = t.store.layer_dir(&info.diff_id);
    damage(&layer.join("app/data"));
    reboot(&t.store);
    let reopened = Store::open(t.store.root()).unwrap();
    assert_eq!(
        reopened.recovered_at_open().recreated,
        vec![info.diff_id.clone()]
    );
    assert_eq!(
        fs::read(layer.join("app/data")).unwrap(),
        vec![7u8; 100_000]
    );
    assert_eq!(listing(&layer), want);
    assert_layer_matches_blob(&reopened, &info.diff_id, &info.digest);
    assert_eq!(journal_text(&reopened), "");
}

/// Within the same boot nothing is re-created and young entries stay listed.
#[test]
fn same_boot_entries_are_left_alone() {
    let t = TempStore::new();
    let image = small_image(&t.store, "same boot");
    let diff_id = image.diff_ids()[0].clone();
    let before = journal_text(&t.store);
    damage(&t.store.layer_dir(&diff_id).join("etc/hello"));

    let reopened = Store::open(t.store.root()).unwrap();
    assert_eq!(reopened.recovered_at_open(), &Default::default());
    let hello = fs::read(reopened.layer_dir(&diff_id).join("etc/hello")).unwrap();
    assert!(hello.is_empty(), "the layer was not touched");
    assert_eq!(journal_text(&reopened), before, "young entries stay");
}

/// Entries of this boot older than a minute are dropped (after a syncfs) by the next open;
/// the layer is not re-created.
#[test]
fn old_entries_of_this_boot_are_compacted() {
    let t = TempStore::new();
    let image = small_image(&t.store, "compacted");
    let diff_id = image.diff_ids()[0].clone();
    assert_eq!(listed(&t.store, &diff_id).len(), 1);
    set_field(&t.store, 1, "0");
    let reopened = Store::open(t.store.root()).unwrap();
    assert_eq!(reopened.recovered_at_open(), &Default::default());
    assert_eq!(journal_text(&reopened), "");
    assert_eq!(
        fs::read_to_string(reopened.layer_dir(&diff_id).join("etc/hello")).unwrap(),
        "compacted"
    );

    // A later publish is journaled again.
    let other = small_image(&reopened, "later");
    assert_eq!(listed(&reopened, &other.diff_ids()[0]).len(), 1);
}

/// Opens the store in a forked child that SIGKILLs itself at `point` of the recovery.
fn open_and_die_at(root: &Path, point: &str) {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    // SAFETY: the child only opens the store (file I/O in this one thread) and then dies or
    // leaves with _exit; the test process runs this test alone.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            std::env::set_var(KILL_DURING_RECOVERY_ENV, point);
            let _ = Store::open(root);
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(3) };
        }
        ForkResult::Parent { child } => {
            let status = waitpid(child, None).unwrap();
            assert!(
                matches!(
                    status,
                    WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
                ),
                "the child must die at {point}: {status:?}"
            );
        }
    }
}

#[test]
fn kill_9_during_recovery_is_finished_by_the_next_open() {
    for point in ["applied", "swapped"] {
        let t = TempStore::new();
        let image = small_image(&t.store, "killed");
        let (diff_id, blob) = (
            image.diff_ids()[0].clone(),
            image.layer_digests()[0].clone(),
        );
        damage(&t.store.layer_dir(&diff_id).join("etc/hello"));
        reboot(&t.store);

        open_and_die_at(t.store.root(), point);
        assert!(
            t.store.has_layer(&diff_id),
            "{point}: the layer is never missing"
        );
        assert!(
            listed(&t.store, &diff_id)[0].starts_with(FAKE_BOOT),
            "{point}: still listed"
        );

        let reopened = Store::open(t.store.root()).unwrap();
        assert_eq!(
            reopened.recovered_at_open().recreated,
            vec![diff_id.clone()],
            "{point}"
        );
        assert_layer_matches_blob(&reopened, &diff_id, &blob);
        assert_eq!(journal_text(&reopened), "", "{point}");
        assert!(
            reopened.incomplete_removed_at_open() >= 1,
            "{point}: the killed process's scratch dir was cleaned up"
        );
        let report = reopened.check().unwrap();
        assert!(report.is_consistent(), "{point}: {:?}", report.problems);
    }
}

/// A listed layer whose blob is gone while an image names it stays (it may be the only copy),
/// is marked unrecovered and reported by `system check`; once its dir is removed the entry goes.
#[test]
fn layer_without_its_blob_is_reported_by_check() {
    let t = TempStore::new();
    let image = small_image(&t.store, "orphaned");
    let (diff_id, blob) = (
        image.diff_ids()[0].clone(),
        image.layer_digests()[0].clone(),
    );
    fs::remove_file(t.store.blob_path(&blob)).unwrap();
    reboot(&t.store);

    let reopened = Store::open(t.store.root()).unwrap();
    let report = reopened.recovered_at_open();
    assert!(report.recreated.is_empty());
    assert_eq!(report.unrecovered.len(), 1, "{report:?}");
    assert!(reopened.has_layer(&diff_id), "the only copy is kept");
    let lines = listed(&reopened, &diff_id);
    assert!(lines[0].starts_with("unrecovered "), "{lines:?}");
    let problems = reopened.check().unwrap().problems.join("\n");
    assert!(
        problems.contains(&format!(
            "layers/{}: published before an unclean shutdown",
            diff_id.hex()
        )) && problems.contains(&format!("blob {blob} is not in the store")),
        "{problems}"
    );

    // Not retried at the next open, but dropped once the layer dir is gone.
    let again = Store::open(t.store.root()).unwrap();
    assert_eq!(again.recovered_at_open(), &Default::default());
    assert_eq!(listed(&again, &diff_id).len(), 1);
    fs::remove_dir_all(again.layer_dir(&diff_id)).unwrap();
    let last = Store::open(t.store.root()).unwrap();
    assert_eq!(listed(&last, &diff_id), Vec::<String>::new());
}

/// A listed layer that no blob and no image can restore is removed: it cannot be verified and
/// nothing needs it.
#[test]
fn layer_nothing_can_restore_is_removed() {
    let t = TempStore::new();
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("f"), "loose").unwrap();
    let mut tar = Vec::new();
    let info = write_layer(src.path(), &WriteOptions::default(), &mut tar).unwrap();
    let scratch = t.store.scratch_dir("loose").unwrap();
    let dest = scratch.path().join("layer");
    apply_layer(&tar[..], &dest, &ApplyLimits::default()).unwrap();
    t.store.commit_layer_dir(&dest, &info.diff_id).unwrap();
    reboot(&t.store);

    let reopened = Store::open(t.store.root()).unwrap();
    assert_eq!(
        reopened.recovered_at_open().removed,
        vec![info.diff_id.clone()]
    );
    assert!(!reopened.has_layer(&info.diff_id));
    assert_eq!(journal_text(&reopened), "");
}

/// While the layer is re-created, a concurrent reader always finds it whole or damaged, never
/// missing (the new tree is swapped in with RENAME_EXCHANGE).
#[test]
fn layer_is_never_missing_while_it_is_recreated() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let t = TempStore::new();
    let image = small_image(&t.store, "watched");
    let diff_id = image.diff_ids()[0].clone();
    let hello = t.store.layer_dir(&diff_id).join("etc/hello");
    damage(&hello);
    let stop = Arc::new(AtomicBool::new(false));
    let (missing, looks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let watcher = {
        let (stop, missing, looks, hello) =
            (stop.clone(), missing.clone(), looks.clone(), hello.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if !hello.exists() {
                    missing.fetch_add(1, Ordering::Relaxed);
                }
                looks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for _ in 0..20 {
        reboot(&t.store);
        let reopened = Store::open(t.store.root()).unwrap();
        assert_eq!(
            reopened.recovered_at_open().recreated,
            vec![diff_id.clone()]
        );
        // Journal the layer again for the next round, as its publisher did.
        let line = format!("x 0 {} {}\n", diff_id.hex(), image.layer_digests()[0].hex());
        fs::write(journal(&t.store), line).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(looks.load(Ordering::Relaxed) > 0);
    assert_eq!(
        missing.load(Ordering::Relaxed),
        0,
        "the layer was seen missing"
    );
    assert_eq!(fs::read_to_string(&hello).unwrap(), "watched");
}

/// When re-creating fails for another reason (here a damaged layer blob), the entry stays as it
/// was: `system check` names the layer, and the next open tries again (and succeeds once the
/// blob is good again).
#[test]
fn failed_recovery_is_reported_and_retried() {
    let t = TempStore::new();
    let image = small_image(&t.store, "retried");
    let (diff_id, blob) = (
        image.diff_ids()[0].clone(),
        image.layer_digests()[0].clone(),
    );
    damage(&t.store.layer_dir(&diff_id).join("etc/hello"));
    reboot(&t.store);
    let blob_path = t.store.blob_path(&blob);
    let good = fs::read(&blob_path).unwrap();
    fs::write(
        &blob_path,
        vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3],
    )
    .unwrap();

    let failed = Store::open(t.store.root()).unwrap();
    let report = failed.recovered_at_open();
    assert!(report.recreated.is_empty());
    assert_eq!(report.unrecovered.len(), 1, "{report:?}");
    assert!(
        listed(&failed, &diff_id)[0].starts_with(FAKE_BOOT),
        "still listed as it was"
    );
    let problems = failed.check().unwrap().problems.join("\n");
    assert!(
        problems.contains(&format!("layers/{}", diff_id.hex()))
            && problems.contains("re-creating it from its blob failed"),
        "{problems}"
    );

    fs::write(&blob_path, good).unwrap();
    let retried = Store::open(t.store.root()).unwrap();
    assert_eq!(retried.recovered_at_open().recreated, vec![diff_id.clone()]);
    assert_layer_matches_blob(&retried, &diff_id, &blob);
    assert_eq!(journal_text(&retried), "");
}
