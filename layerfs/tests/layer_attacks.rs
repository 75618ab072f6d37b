//! Hostile layer tars: every case must leave the host untouched and end in confinement (the
//! write lands inside the layer root) or a clear error with the partial output removed.

mod common;

use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{empty_or_absent, RawTar};
use rbuild_layerfs::layer::{apply_layer, ApplyLimits, LayerError};
use tar::{EntryType, Header};

/// A scratch area: `dest` (the layer root, not yet created) beside `outside` (a host dir that
/// must stay empty) and `secret` (a host file that must not be linked or changed).
struct Arena {
    _tmp: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
    secret: PathBuf,
}

impl Arena {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, b"host secret").unwrap();
        Arena {
            _tmp: tmp,
            dest,
            outside,
            secret,
        }
    }

    fn apply(&self, tar: &[u8]) -> Result<(), LayerError> {
        apply_layer(tar, &self.dest, &ApplyLimits::default()).map(|_| ())
    }

    /// The host is as it was: `outside` empty, `secret` unchanged and not linked.
    fn assert_host_untouched(&self) {
        assert!(
            empty_or_absent(&self.outside),
            "a write escaped into {:?}",
            self.outside
        );
        let md = std::fs::metadata(&self.secret).unwrap();
        assert_eq!(md.nlink(), 1, "the host secret was hard-linked");
        assert_eq!(std::fs::read(&self.secret).unwrap(), b"host secret");
    }

    /// An error names the entry and leaves no partial layer behind.
    fn assert_clean_error(&self, result: Result<(), LayerError>, needle: &str) {
        let err = result.expect_err("hostile layer must be refused");
        let msg = err.to_string();
        assert!(
            msg.contains(needle),
            "error {msg:?} should mention {needle:?}"
        );
        assert!(
            !self.dest.exists(),
            "partial output left in {:?}",
            self.dest
        );
        self.assert_host_untouched();
    }

    fn abs(&self, p: &Path) -> Vec<u8> {
        p.as_os_str().as_bytes().to_vec()
    }
}

#[test]
fn parent_dir_entries_are_refused() {
    for name in [
        &b"../../etc/rbuild-attack"[..],
        b"../outside/x",
        b"a/../../outside/x",
    ] {
        let arena = Arena::new();
        let tar = RawTar::new()
            .file(b"ok", b"fine")
            .file(name, b"evil")
            .finish();
        arena.assert_clean_error(arena.apply(&tar), "outside its root");
        assert!(!Path::new("/etc/rbuild-attack").exists());
    }
}

#[test]
fn absolute_entries_are_confined_to_the_layer_root() {
    let arena = Arena::new();
    let mut into_outside = arena.abs(&arena.outside);
    into_outside.extend_from_slice(b"/x");
    let tar = RawTar::new()
        .file(b"/etc/rbuild-attack-abs", b"evil")
        .file(&into_outside, b"evil")
        .finish();
    arena.apply(&tar).unwrap();
    assert!(!Path::new("/etc/rbuild-attack-abs").exists());
    assert_eq!(
        std::fs::read(arena.dest.join("etc/rbuild-attack-abs")).unwrap(),
        b"evil"
    );
    let inside = arena
        .dest
        .join(arena.outside.strip_prefix("/").unwrap())
        .join("x");
    assert_eq!(std::fs::read(inside).unwrap(), b"evil");
    arena.assert_host_untouched();
}

#[test]
fn root_entries_that_are_not_directories_are_refused() {
    for root_name in [&b"."[..], b"/", b"./"] {
        let arena = Arena::new();
        let outside = arena.abs(&arena.outside);
        let tar = RawTar::new()
            .symlink(root_name, &outside)
            .file(b"x", b"evil")
            .finish();
        arena.assert_clean_error(arena.apply(&tar), "layer root can only be a directory");
    }
}

#[test]
fn writes_through_symlinks_stay_inside() {
    let arena = Arena::new();
    let outside = arena.abs(&arena.outside);
    let tar = RawTar::new()
        // Absolute symlink to a host dir, then a write through it (RUSTSEC-2021-0080).
        .symlink(b"evil", &outside)
        .file(b"evil/pwned", b"evil")
        // A relative symlink climbing far above the root, then a write through it.
        .symlink(b"up", b"../../../../../../../../..")
        .dir(b"up/tmp-escape")
        .file(b"up/tmp-escape/pwned", b"evil")
        // A directory replaced by a symlink in the same layer, then a write through it.
        .dir(b"d")
        .symlink(b"d", &outside)
        .file(b"d/pwned2", b"evil")
        .finish();
    let result = arena.apply(&tar);
    arena.assert_host_untouched();
    match result {
        Ok(()) => {
            // Confinement: every write landed below the layer root.
            let landed = arena.dest.join(arena.outside.strip_prefix("/").unwrap());
            assert_eq!(std::fs::read(landed.join("pwned")).unwrap(), b"evil");
            assert_eq!(std::fs::read(landed.join("pwned2")).unwrap(), b"evil");
            assert!(arena.dest.join("tmp-escape/pwned").exists());
        }
        Err(e) => assert!(!arena.dest.exists(), "error {e} left partial output"),
    }
}

#[test]
fn symlink_to_outside_then_write_is_confined_or_refused_one_by_one() {
    // Each vector on its own, so one refusal cannot hide another's outcome.
    type Case = fn(&Arena) -> Vec<u8>;
    let cases: [(&str, Case); 4] = [
        ("absolute symlink", |a| {
            let outside = a.abs(&a.outside);
            RawTar::new()
                .symlink(b"evil", &outside)
                .file(b"evil/pwned", b"x")
                .finish()
        }),
        ("climbing symlink", |_| {
            RawTar::new()
                .symlink(b"up", b"../../../../..")
                .file(b"up/pwned", b"x")
                .finish()
        }),
        ("symlink chain", |a| {
            let outside = a.abs(&a.outside);
            RawTar::new()
                .symlink(b"a", b"b")
                .symlink(b"b", &outside)
                .file(b"a/pwned", b"x")
                .finish()
        }),
        ("symlink to a host file, then overwrite it", |a| {
            let secret = a.abs(&a.secret);
            RawTar::new()
                .symlink(b"s", &secret)
                .file(b"s", b"overwritten")
                .finish()
        }),
    ];
    for (what, make) in cases {
        let arena = Arena::new();
        let result = arena.apply(&make(&arena));
        arena.assert_host_untouched();
        match result {
            Ok(()) => assert!(
                walkdir::WalkDir::new(&arena.dest)
                    .into_iter()
                    .filter_map(Result::ok)
                    .any(|e| e.file_name() == "pwned" || e.file_name() == "s"),
                "{what}: the write must have landed inside the layer"
            ),
            Err(e) => assert!(
                !arena.dest.exists(),
                "{what}: error {e} left partial output"
            ),
        }
    }
}

#[test]
fn hard_links_cannot_reach_outside() {
    let arena = Arena::new();
    let secret = arena.abs(&arena.secret);
    // Absolute target: resolved inside the root, where it does not exist.
    let tar = RawTar::new().hardlink(b"hl", &secret).finish();
    arena.assert_clean_error(arena.apply(&tar), "hl");

    // Relative climb.
    let arena = Arena::new();
    let tar = RawTar::new().hardlink(b"hl", b"../secret").finish();
    arena.assert_clean_error(arena.apply(&tar), "outside its root");

    // Missing target.
    let arena = Arena::new();
    let tar = RawTar::new()
        .file(b"a", b"x")
        .hardlink(b"hl", b"missing")
        .finish();
    arena.assert_clean_error(arena.apply(&tar), "hl");

    // Through a symlink that points at the host dir holding the secret.
    let arena = Arena::new();
    let parent = arena.abs(arena.secret.parent().unwrap());
    let tar = RawTar::new()
        .symlink(b"s", &parent)
        .hardlink(b"hl", b"s/secret")
        .finish();
    arena.assert_clean_error(arena.apply(&tar), "hl");

    // A link through an in-root symlink to an in-root file is fine.
    let arena = Arena::new();
    let tar = RawTar::new()
        .dir(b"real")
        .file(b"real/f", b"data")
        .symlink(b"s", b"/real")
        .hardlink(b"hl", b"s/f")
        .finish();
    arena.apply(&tar).unwrap();
    let a = std::fs::metadata(arena.dest.join("real/f")).unwrap();
    let b = std::fs::metadata(arena.dest.join("hl")).unwrap();
    assert_eq!(a.ino(), b.ino());
    arena.assert_host_untouched();
}

#[test]
fn malformed_whiteouts_are_refused() {
    for name in [&b".wh.."[..], b".wh...", b"etc/.wh..", b".wh.", b".wh.x/y"] {
        let arena = Arena::new();
        let tar = RawTar::new().dir(b"etc").file(name, b"").finish();
        let result = arena.apply(&tar);
        let err = result.expect_err("malformed whiteout must be refused");
        assert!(matches!(err, LayerError::BadEntry { .. }), "{err}");
        assert!(!arena.dest.exists());
        arena.assert_host_untouched();
    }
}

#[test]
fn duplicate_paths_last_entry_wins_inside_the_root() {
    let arena = Arena::new();
    let outside = arena.abs(&arena.outside);
    let tar = RawTar::new()
        .file(b"a", b"one")
        .file(b"a", b"two")
        .dir(b"d")
        .file(b"d/x", b"x")
        .file(b"d", b"now a file")
        .file(b"f", b"file")
        .dir(b"f")
        .file(b"f/y", b"y")
        .dir(b"keep")
        .file(b"keep/1", b"1")
        .dir(b"keep")
        .symlink(b"l", &outside)
        .file(b"l", b"replaced the symlink")
        .finish();
    arena.apply(&tar).unwrap();
    let read = |p: &str| std::fs::read(arena.dest.join(p)).unwrap();
    assert_eq!(read("a"), b"two");
    assert_eq!(read("d"), b"now a file");
    assert_eq!(read("f/y"), b"y");
    assert_eq!(
        read("keep/1"),
        b"1",
        "a repeated directory keeps its content"
    );
    assert_eq!(read("l"), b"replaced the symlink");
    arena.assert_host_untouched();
}

#[test]
fn odd_names_are_kept_or_refused_clearly() {
    let arena = Arena::new();
    let tar = RawTar::new()
        .file(b"caf\xe9", b"latin1")
        .file(b"\xff\xfe", b"junk bytes")
        .finish();
    arena.apply(&tar).unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9");
    assert_eq!(std::fs::read(arena.dest.join(name)).unwrap(), b"latin1");
    arena.assert_host_untouched();

    // A 300-byte component is longer than any Linux filesystem allows.
    let arena = Arena::new();
    let long = vec![b'n'; 300];
    let tar = RawTar::new().file(b"ok", b"").file(&long, b"x").finish();
    arena.assert_clean_error(arena.apply(&tar), "nnnn");

    // A path longer than PATH_MAX.
    let arena = Arena::new();
    let mut deep = Vec::new();
    for _ in 0..20 {
        deep.extend_from_slice(&[b'd'; 250]);
        deep.push(b'/');
    }
    deep.extend_from_slice(b"leaf");
    let tar = RawTar::new().file(&deep, b"x").finish();
    arena.assert_clean_error(arena.apply(&tar), "leaf");
}

/// Repeats one gzip member `count` times, lazily.
struct RepeatReader {
    chunk: Vec<u8>,
    pos: usize,
    count: u64,
}

impl Read for RepeatReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.count == 0 {
            return Ok(0);
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.chunk.len() {
            self.pos = 0;
            self.count -= 1;
        }
        Ok(n)
    }
}

#[test]
fn gzip_bomb_is_stopped_by_the_byte_budget() {
    // One gzip member: a tar entry "f" of 1 MiB of zeros. 4096 copies expand to 4 GiB from
    // about 4 MiB of input (gzip readers decode concatenated members as one stream).
    let mut entry = RawTar::new();
    entry.file(b"f", &vec![0u8; 1 << 20]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&entry.bytes).unwrap();
    let member = gz.finish().unwrap();
    assert!(member.len() < 16 << 10, "member is {} bytes", member.len());
    let bomb = RepeatReader {
        chunk: member,
        pos: 0,
        count: 4096,
    };
    let arena = Arena::new();
    let limits = ApplyLimits {
        max_bytes: 4 << 20,
        max_entries: 1_000_000,
    };
    let err = apply_layer(bomb, &arena.dest, &limits).unwrap_err();
    assert!(matches!(err, LayerError::TooManyBytes { .. }), "{err}");
    assert!(err.to_string().contains("budget"));
    assert!(!arena.dest.exists(), "partial output must be removed");

    // A single header that claims more than the budget is refused before any data is written.
    let mut huge = Header::new_gnu();
    huge.as_old_mut().name[..4].copy_from_slice(b"huge");
    huge.set_entry_type(EntryType::Regular);
    huge.set_size(8 << 30);
    huge.set_mode(0o644);
    huge.set_cksum();
    let arena = Arena::new();
    let err = apply_layer(&huge.as_bytes()[..], &arena.dest, &limits).unwrap_err();
    assert!(matches!(err, LayerError::TooManyBytes { .. }), "{err}");
    assert!(!arena.dest.exists());
}

/// A plain tar of `total` empty files, generated on the fly.
struct ManyEntries {
    next: u64,
    total: u64,
    block: [u8; 512],
    pos: usize,
}

impl ManyEntries {
    fn new(total: u64) -> Self {
        ManyEntries {
            next: 0,
            total,
            block: [0u8; 512],
            pos: 512,
        }
    }

    fn refill(&mut self) -> bool {
        if self.next >= self.total + 2 {
            return false;
        }
        if self.next >= self.total {
            self.block = [0u8; 512];
        } else {
            let mut header = Header::new_gnu();
            let name = format!("d/f{:07}", self.next);
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(EntryType::Regular);
            header.set_size(0);
            header.set_mode(0o644);
            header.set_cksum();
            self.block.copy_from_slice(header.as_bytes());
        }
        self.next += 1;
        self.pos = 0;
        true
    }
}

impl Read for ManyEntries {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == 512 && !self.refill() {
            return Ok(0);
        }
        let n = buf.len().min(512 - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn million_entry_tar_is_stopped_by_the_entry_budget() {
    let arena = Arena::new();
    std::fs::create_dir(&arena.dest).unwrap();
    let limits = ApplyLimits {
        max_bytes: u64::MAX,
        max_entries: 5_000,
    };
    let err = apply_layer(ManyEntries::new(1_000_000), &arena.dest, &limits).unwrap_err();
    assert!(
        matches!(err, LayerError::TooManyEntries { limit: 5_000 }),
        "{err}"
    );
    assert!(arena.dest.exists(), "a caller-made destination stays");
    assert!(
        empty_or_absent(&arena.dest),
        "partial output must be removed"
    );
}

#[test]
fn destination_with_content_is_refused() {
    let arena = Arena::new();
    std::fs::create_dir(&arena.dest).unwrap();
    std::fs::write(arena.dest.join("precious"), b"keep").unwrap();
    let tar = RawTar::new().file(b"a", b"x").finish();
    let err = arena.apply(&tar).unwrap_err();
    assert!(matches!(err, LayerError::DestNotEmpty(_)), "{err}");
    assert_eq!(std::fs::read(arena.dest.join("precious")).unwrap(), b"keep");
}

#[test]
fn truncated_or_corrupt_blobs_fail_cleanly() {
    let mut tar = RawTar::new();
    for i in 0..50 {
        tar.file(format!("f{i}").as_bytes(), &[b'x'; 3000]);
    }
    let tar = tar.finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for (what, blob) in [
        ("truncated gzip", gz[..gz.len() / 2].to_vec()),
        ("truncated zstd", zst[..zst.len() / 2].to_vec()),
        ("truncated tar", tar[..tar.len() / 3 + 100].to_vec()),
        ("gzip with a flipped byte", {
            let mut b = gz.clone();
            let mid = b.len() / 2;
            b[mid] ^= 0xff;
            b
        }),
    ] {
        let arena = Arena::new();
        let err = arena.apply(&blob).expect_err(what);
        assert!(
            matches!(err, LayerError::Stream(_) | LayerError::BadEntry { .. }),
            "{what}: {err}"
        );
        assert!(!arena.dest.exists(), "{what}: partial output left");
    }
}
