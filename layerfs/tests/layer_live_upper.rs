//! write_layer on an upper dir that a "running container" changes at the same time: the walk
//! must never leave the upper dir, and a file changing size must give a valid tar or a clear
//! error.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rbuild_layerfs::layer::{write_layer, Compression, LayerError, WriteOptions};
use rustix::fs::{Mode, OFlags, RenameFlags, CWD};

/// Content of the host file that must never reach a layer.
const SENTINEL: &[u8] = b"HOST-SENTINEL-7f3a9c1e-must-not-leak";
/// Name of a host-only file: its appearance in a layer would also be a leak.
const HOST_ONLY_NAME: &[u8] = b"host-only-7f3a9c1e";

/// Upper bound on the work each race test does (the test asserts results, never timing).
const MAX_ITERATIONS: usize = 200;
const MAX_DURATION: Duration = Duration::from_secs(5);

/// A background thread running `step` in a loop until dropped (also when the test panics).
struct Racer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<usize>>,
}

impl Racer {
    fn start(mut step: impl FnMut() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut rounds = 0usize;
            while !flag.load(Ordering::Relaxed) {
                step();
                rounds += 1;
            }
            rounds
        });
        Racer {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the thread; returns how many rounds it ran.
    fn finish(mut self) -> usize {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take() {
            Some(handle) => handle.join().expect("racer thread panicked"),
            None => 0,
        }
    }
}

impl Drop for Racer {
    fn drop(&mut self) {
        if self.handle.is_some() {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(handle) = self.handle.take() {
                let _ = handle.join();
            }
        }
    }
}

fn open_dir(path: &Path) -> OwnedFd {
    rustix::fs::openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

fn plain() -> WriteOptions {
    WriteOptions {
        compression: Compression::None,
        mtime_clamp: None,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads every entry of an uncompressed layer tar; returns (path, entry type, content).
fn read_tar(tar: &[u8]) -> Vec<(PathBuf, tar::EntryType, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries().expect("tar header") {
        let mut entry = entry.expect("valid tar entry");
        let path = entry.path().expect("entry path").into_owned();
        let kind = entry.header().entry_type();
        let size = entry.header().size().expect("entry size");
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("entry data");
        assert_eq!(
            data.len() as u64,
            size,
            "{path:?}: data length != header size"
        );
        out.push((path, kind, data));
    }
    out
}

#[test]
fn exchanging_a_directory_with_a_symlink_to_the_host_never_leaks_host_files() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    std::fs::write(host.join("sub/f"), SENTINEL).unwrap();
    std::fs::write(host.join("f"), SENTINEL).unwrap();
    std::fs::write(
        host.join("sub")
            .join(std::str::from_utf8(HOST_ONLY_NAME).unwrap()),
        SENTINEL,
    )
    .unwrap();

    // Same shape inside the upper dir, so a walk that resolves `d/sub/f` by path would read the
    // host's `sub/f` whenever `d` is the symlink at that moment.
    let upper = tmp.path().join("upper");
    std::fs::create_dir_all(upper.join("d/sub")).unwrap();
    std::fs::write(upper.join("d/sub/f"), b"inside").unwrap();
    std::fs::write(upper.join("d/f"), b"inside").unwrap();
    std::os::unix::fs::symlink(&host, upper.join("l")).unwrap();

    let upper_fd = open_dir(&upper);
    let racer = Racer::start(move || {
        rustix::fs::renameat_with(&upper_fd, "d", &upper_fd, "l", RenameFlags::EXCHANGE)
            .expect("renameat2(RENAME_EXCHANGE)");
    });

    let started = Instant::now();
    let (mut written, mut refused, mut path_leaks) = (0usize, 0usize, 0usize);
    for _ in 0..MAX_ITERATIONS {
        if started.elapsed() > MAX_DURATION {
            break;
        }
        // Control: what a by-path reader (O_NOFOLLOW on the last component only, like the
        // old writer) sees at the same moment.
        let by_path = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(upper.join("d/sub/f"))
            .and_then(|mut f| {
                let mut data = Vec::new();
                f.read_to_end(&mut data).map(|_| data)
            });
        if matches!(&by_path, Ok(data) if data == SENTINEL) {
            path_leaks += 1;
        }
        let mut blob = Vec::new();
        match write_layer(&upper, &plain(), &mut blob) {
            Ok(_) => {
                written += 1;
                assert!(
                    !contains(&blob, SENTINEL),
                    "a host file's content reached the layer"
                );
                assert!(
                    !contains(&blob, HOST_ONLY_NAME),
                    "a host file's name reached the layer"
                );
                for (path, kind, data) in read_tar(&blob) {
                    assert!(
                        path.starts_with("d") || path.starts_with("l"),
                        "unexpected entry {path:?}"
                    );
                    if kind == tar::EntryType::Regular {
                        assert_eq!(data, b"inside", "{path:?}");
                    }
                }
            }
            Err(err) => {
                // Giving up on an entry that keeps changing type is allowed; it must say so.
                let msg = err.to_string();
                assert!(
                    msg.contains("changing type") || msg.contains("changed"),
                    "unexpected error: {msg}"
                );
                refused += 1;
            }
        }
    }
    let swaps = racer.finish();
    assert!(swaps > 0, "the swapping thread never ran");
    assert!(written + refused > 0);
    eprintln!(
        "{written} layers written, {refused} refused, {swaps} exchanges; \
         a by-path reader read the host file {path_leaks} times"
    );
}

#[test]
fn a_file_changing_size_during_the_write_gives_a_valid_tar_or_a_changed_error() {
    const BIG: u64 = 4 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    std::fs::create_dir(&upper).unwrap();
    std::fs::write(upper.join("a-steady"), b"steady").unwrap();
    let big = upper.join("big.bin");
    std::fs::write(&big, vec![0u8; BIG as usize]).unwrap();
    std::fs::write(upper.join("z-steady"), b"steady").unwrap();

    let file = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    let mut grow = false;
    let racer = Racer::start(move || {
        file.set_len(if grow { BIG } else { BIG / 3 }).unwrap();
        grow = !grow;
    });

    let started = Instant::now();
    let (mut written, mut refused) = (0usize, 0usize);
    // Each round copies megabytes, so fewer rounds than the rename race.
    for _ in 0..MAX_ITERATIONS / 4 {
        if started.elapsed() > MAX_DURATION {
            break;
        }
        let mut blob = Vec::new();
        match write_layer(&upper, &plain(), &mut blob) {
            Ok(_) => {
                written += 1;
                let entries = read_tar(&blob);
                let names: Vec<_> = entries.iter().map(|(p, _, _)| p.clone()).collect();
                assert_eq!(
                    names,
                    [
                        PathBuf::from("a-steady"),
                        PathBuf::from("big.bin"),
                        PathBuf::from("z-steady")
                    ]
                );
                let big_data = &entries[1].2;
                assert!(
                    big_data.len() as u64 == BIG || big_data.len() as u64 == BIG / 3,
                    "big.bin has {} bytes",
                    big_data.len()
                );
                assert!(big_data.iter().all(|b| *b == 0));
            }
            Err(LayerError::Changed(path)) => {
                assert_eq!(path, big, "the error must name the file that changed");
                refused += 1;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    racer.finish();
    assert!(written + refused > 0);
    eprintln!("{written} layers written, {refused} refused as changed");
}

#[test]
fn symlink_xattrs_are_read_from_the_link_itself_never_its_target() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    std::fs::create_dir(&host).unwrap();
    rustix::fs::setxattr(
        &host,
        "trusted.rbuild-host",
        SENTINEL,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let upper = tmp.path().join("upper");
    std::fs::create_dir(&upper).unwrap();
    let link = upper.join("l");
    std::os::unix::fs::symlink(&host, &link).unwrap();
    rustix::fs::lsetxattr(
        &link,
        "trusted.rbuild-link",
        b"on-the-link",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();

    let mut blob = Vec::new();
    write_layer(&upper, &plain(), &mut blob).unwrap();
    assert!(!contains(&blob, SENTINEL), "the target's xattr was read");
    let mut archive = tar::Archive::new(&blob[..]);
    let mut entries = archive.entries().unwrap();
    let mut entry = entries.next().unwrap().unwrap();
    assert_eq!(entry.header().entry_type(), tar::EntryType::Symlink);
    let xattrs: Vec<(String, Vec<u8>)> = entry
        .pax_extensions()
        .unwrap()
        .expect("the symlink carries its xattr")
        .map(|ext| {
            let ext = ext.unwrap();
            (ext.key().unwrap().to_string(), ext.value_bytes().to_vec())
        })
        .collect();
    assert_eq!(
        xattrs,
        [(
            "SCHILY.xattr.trusted.rbuild-link".to_string(),
            b"on-the-link".to_vec()
        )]
    );
}

#[test]
fn a_deeply_nested_tree_is_written_in_order() {
    const DEPTH: usize = 300;
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    let mut dir = upper.clone();
    for _ in 0..DEPTH {
        dir.push("d");
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("leaf"), b"leaf").unwrap();
    std::fs::write(upper.join("z"), b"last").unwrap();

    let mut blob = Vec::new();
    write_layer(&upper, &plain(), &mut blob).unwrap();
    let entries = read_tar(&blob);
    assert_eq!(entries.len(), DEPTH + 2);
    let mut expected = PathBuf::new();
    for (path, kind, _) in &entries[..DEPTH] {
        expected.push("d");
        assert_eq!(path, &expected);
        assert_eq!(*kind, tar::EntryType::Directory);
    }
    assert_eq!(entries[DEPTH].0, expected.join("leaf"));
    assert_eq!(entries[DEPTH].2, b"leaf");
    assert_eq!(entries[DEPTH + 1].0, PathBuf::from("z"));
}
