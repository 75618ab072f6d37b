//! Edge cases of the FUSE union driver, each run on kernel overlayfs and on FUSE over the same
//! layers: both must report the same results (overlay is the oracle, and the key facts are
//! asserted outright too), and what the FUSE mount shows must be what its upper dir holds (the
//! layers plus the upper dir, mounted read-only with overlay afterwards, look the same).

mod fuse_support;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fuse_support::{assert_same_tree, snapshot, write, MountDirs};
use rbuild_layerfs::mount::{mount_union, Driver, MountSpec};
use rustix::fs::{AtFlags, Timespec, Timestamps, XattrFlags, CWD};

const GIB: u64 = 1 << 30;

/// One scenario: builds its lower layer in the given dir, then acts on the mount and records
/// what it saw, one line per observation.
struct Scenario {
    layer: fn(&Path),
    act: fn(&Path, &Path) -> Vec<String>,
}

/// Runs `scenario` on overlay and on FUSE, checks both saw the same, checks the FUSE upper dir
/// holds what the FUSE mount showed, and returns the observations.
fn like_overlay(scenario: Scenario) -> Vec<String> {
    let tmp = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let mut seen = Vec::new();
    for (name, driver) in [("overlay", Driver::Overlay), ("fuse", Driver::Fuse)] {
        let layer = tmp.path().join(name).join("layer");
        fs::create_dir_all(&layer).expect("create layer dir");
        (scenario.layer)(&layer);
        let dirs = MountDirs::new(tmp.path(), name);
        let mount = dirs.mount(std::slice::from_ref(&layer), driver);
        let lines = (scenario.act)(mount.target(), &dirs.upper);
        let shown = snapshot(mount.target());
        mount.unmount().expect("unmount");
        if driver == Driver::Fuse {
            let again = tmp.path().join("remounted");
            fs::create_dir_all(&again).expect("mkdir");
            let view = mount_union(
                &MountSpec {
                    layers: vec![layer.clone(), dirs.upper.clone()],
                    upper: None,
                    work: None,
                    target: again.clone(),
                },
                Driver::Overlay,
            )
            .expect("overlay mount of the FUSE upper dir");
            assert_same_tree(
                &snapshot(&again),
                &shown,
                "overlay of the FUSE upper dir (left) vs the FUSE mount (right)",
            );
            view.unmount().expect("unmount");
        }
        seen.push(lines);
    }
    let (overlay, fuse) = (&seen[0], &seen[1]);
    for (o, f) in overlay.iter().zip(fuse) {
        assert_eq!(o, f, "overlay saw the first, FUSE the second");
    }
    assert_eq!(overlay.len(), fuse.len());
    seen.swap_remove(0)
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).expect("read")).into_owned()
}

fn nlink(path: &Path) -> u64 {
    fs::symlink_metadata(path).expect("lstat").nlink()
}

fn errno<T>(result: Result<T, impl Into<std::io::Error>>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => format!("errno {}", e.into().raw_os_error().unwrap_or(-1)),
    }
}

fn hard_linked_layer(layer: &Path) {
    write(&layer.join("hl/a"), b"shared", 0o644);
    fs::hard_link(layer.join("hl/a"), layer.join("hl/b")).expect("link");
    fs::hard_link(layer.join("hl/a"), layer.join("hl/c")).expect("link");
    write(&layer.join("tree/x"), b"x", 0o644);
    fs::hard_link(layer.join("tree/x"), layer.join("tree/y")).expect("link");
}

/// overlayfs (index=off) breaks a lower hard link at copy-up: the written name gets the copy,
/// the other names keep showing the lower file, whatever order the names were used in.
#[test]
fn lower_hard_links_split_at_copy_up() {
    let seen = like_overlay(Scenario {
        layer: hard_linked_layer,
        act: |m, _| {
            let mut o = Vec::new();
            // Every name known to the kernel first (as `find` or `chown -R` would).
            for name in ["a", "b", "c"] {
                o.push(format!("{name} nlink {}", nlink(&m.join("hl").join(name))));
            }
            let same = fs::metadata(m.join("hl/a")).unwrap().ino()
                == fs::metadata(m.join("hl/b")).unwrap().ino();
            o.push(format!("a and b share an inode number: {same}"));
            // Written through the second name looked up.
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(m.join("hl/b"))
                .unwrap();
            f.write_all(b"+b").unwrap();
            drop(f);
            for name in ["a", "b", "c"] {
                let p = m.join("hl").join(name);
                o.push(format!("{name}: {:?} nlink {}", read(&p), nlink(&p)));
            }
            // A hard link to a name that still shows the lower file, then unlinks.
            fs::hard_link(m.join("hl/c"), m.join("hl/d")).unwrap();
            o.push(format!(
                "c->d: c {} d {}",
                nlink(&m.join("hl/c")),
                nlink(&m.join("hl/d"))
            ));
            fs::remove_file(m.join("hl/c")).unwrap();
            o.push(format!(
                "d after unlink c: {:?} nlink {}",
                read(&m.join("hl/d")),
                nlink(&m.join("hl/d"))
            ));
            fs::remove_file(m.join("hl/a")).unwrap();
            o.push(format!("b after unlink a: {:?}", read(&m.join("hl/b"))));
            // chown of every name of a tree (chown -R): each name gets its own copy.
            for name in ["x", "y"] {
                let _ = fs::metadata(m.join("tree").join(name)).unwrap();
            }
            for name in ["y", "x"] {
                std::os::unix::fs::chown(m.join("tree").join(name), Some(1234), None).unwrap();
            }
            for name in ["x", "y"] {
                let meta = fs::metadata(m.join("tree").join(name)).unwrap();
                o.push(format!(
                    "tree/{name} uid {} nlink {}",
                    meta.uid(),
                    meta.nlink()
                ));
            }
            o
        },
    });
    assert_eq!(seen[0..3], ["a nlink 3", "b nlink 3", "c nlink 3"]);
    assert_eq!(seen[3], "a and b share an inode number: true");
    assert_eq!(seen[4], "a: \"shared\" nlink 3");
    assert_eq!(seen[5], "b: \"shared+b\" nlink 1");
    assert_eq!(seen[6], "c: \"shared\" nlink 3");
    assert_eq!(seen[8], "d after unlink c: \"shared\" nlink 1");
    assert_eq!(seen[9], "b after unlink a: \"shared+b\"");
    assert_eq!(
        seen[10..],
        ["tree/x uid 1234 nlink 1", "tree/y uid 1234 nlink 1"]
    );
}

/// A file open for reading can still be rewritten (copy-up while open), and the old descriptor
/// then reads the new data, as on overlayfs. FUSE passthrough of the lower file made the
/// second open fail with EIO.
#[test]
fn a_lower_file_open_for_reading_can_be_rewritten() {
    let seen = like_overlay(Scenario {
        layer: |l| {
            write(&l.join("f"), b"old", 0o644);
            write(&l.join("g"), b"0123456789", 0o644);
            write(&l.join("h"), b"h", 0o644);
        },
        act: |m, _| {
            let mut o = Vec::new();
            let reader = fs::File::open(m.join("f")).unwrap();
            o.push(format!(
                "rewrite: {}",
                errno(fs::write(m.join("f"), b"new!"))
            ));
            let mut buf = [0u8; 8];
            let n = reader.read_at(&mut buf, 0).unwrap();
            o.push(format!(
                "old descriptor reads {:?}",
                String::from_utf8_lossy(&buf[..n])
            ));
            o.push(format!(
                "fstat of old descriptor: size {}",
                reader.metadata().unwrap().len()
            ));
            // Two readers, then an append through a third descriptor.
            let r1 = fs::File::open(m.join("g")).unwrap();
            let r2 = fs::File::open(m.join("g")).unwrap();
            let mut w = fs::OpenOptions::new()
                .append(true)
                .open(m.join("g"))
                .unwrap();
            w.write_all(b"AB").unwrap();
            let mut all = String::new();
            (&r1).read_to_string(&mut all).unwrap();
            o.push(format!("reader 1 after append: {all:?}"));
            let n = r2.read_at(&mut buf, 8).unwrap();
            o.push(format!(
                "reader 2 at 8: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ));
            drop((r1, r2, w));
            // Once every descriptor is closed, new opens (passed through again) see the data.
            o.push(format!("g: {:?}", read(&m.join("g"))));
            // A read-only mapping of a lower file, then a write through another descriptor.
            let f = fs::File::open(m.join("h")).unwrap();
            // SAFETY: a fresh read-only shared mapping of one page, unmapped below.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(ptr, libc::MAP_FAILED);
            o.push(format!(
                "write while mapped: {}",
                errno(fs::write(m.join("h"), b"H"))
            ));
            // SAFETY: unmapping the mapping made above.
            unsafe { libc::munmap(ptr, 4096) };
            o.push(format!("h: {:?}", read(&m.join("h"))));
            o
        },
    });
    assert_eq!(seen[0], "rewrite: ok");
    assert_eq!(seen[1], "old descriptor reads \"new!\"");
    assert_eq!(seen[3], "reader 1 after append: \"0123456789AB\"");
    assert_eq!(seen[6], "write while mapped: ok");
}

/// Offsets past 4 GiB, sparse files and their holes: a 5 GiB sparse lower file copies up
/// sparse (as overlayfs does; a dense copy wrote 5 GiB for a chmod), SEEK_DATA/SEEK_HOLE see
/// the holes, writes, reads and truncates past 4 GiB land where they should.
#[test]
fn sparse_files_and_offsets_past_4_gib() {
    let seen = like_overlay(Scenario {
        layer: |l| {
            let f = fs::File::create(l.join("sparse")).unwrap();
            f.write_all_at(b"head", 0).unwrap();
            f.write_all_at(b"tail", 5 * GIB).unwrap();
        },
        act: |m, upper| {
            let mut o = Vec::new();
            let f = fs::File::open(m.join("sparse")).unwrap();
            let mut tail = [0u8; 4];
            f.read_exact_at(&mut tail, 5 * GIB).unwrap();
            o.push(format!(
                "lower tail {:?} size {}",
                String::from_utf8_lossy(&tail),
                f.metadata().unwrap().len()
            ));
            drop(f);
            fs::set_permissions(m.join("sparse"), fs::Permissions::from_mode(0o600)).unwrap();
            let copy = fs::metadata(upper.join("sparse")).unwrap();
            o.push(format!(
                "copy-up size {} under 16 MiB allocated: {}",
                copy.len(),
                copy.blocks() * 512 < 16 << 20
            ));
            let f = fs::File::open(m.join("sparse")).unwrap();
            // overlayfs copies up 1 MiB chunks: look past the first.
            let data = nix::unistd::lseek(&f, 2 << 20, nix::unistd::Whence::SeekData);
            let hole = nix::unistd::lseek(&f, 2 << 20, nix::unistd::Whence::SeekHole);
            o.push(format!(
                "SEEK_DATA from 2 MiB: {data:?}, SEEK_HOLE from 2 MiB: {hole:?}"
            ));
            drop(f);
            let big = fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(m.join("big"))
                .unwrap();
            big.write_all_at(b"xyz", 5 * GIB + 123).unwrap();
            big.sync_data().unwrap();
            let mut back = [0u8; 6];
            big.read_exact_at(&mut back, 5 * GIB + 120).unwrap();
            o.push(format!(
                "past 4 GiB: {back:?} size {}",
                big.metadata().unwrap().len()
            ));
            let path = CString::new(m.join("big").as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: truncate(2) of a NUL-terminated path.
            let r = unsafe { libc::truncate(path.as_ptr(), (7 * GIB) as i64) };
            o.push(format!(
                "truncate to 7 GiB: {r} size {}",
                fs::metadata(m.join("big")).unwrap().len()
            ));
            let copy = fs::File::open(upper.join("sparse")).unwrap();
            let (mut head, mut tail) = ([0u8; 4], [0u8; 4]);
            copy.read_exact_at(&mut head, 0).unwrap();
            copy.read_exact_at(&mut tail, 5 * GIB).unwrap();
            o.push(format!(
                "upper copy holds {:?} {:?}",
                String::from_utf8_lossy(&head),
                String::from_utf8_lossy(&tail)
            ));
            // The tree comparisons read whole files: not these.
            fs::remove_file(m.join("big")).unwrap();
            fs::remove_file(m.join("sparse")).unwrap();
            o
        },
    });
    assert_eq!(seen[0], format!("lower tail \"tail\" size {}", 5 * GIB + 4));
    assert_eq!(seen[5], "upper copy holds \"head\" \"tail\"");
    assert_eq!(
        seen[1],
        format!("copy-up size {} under 16 MiB allocated: true", 5 * GIB + 4)
    );
    assert_eq!(
        seen[2],
        format!(
            "SEEK_DATA from 2 MiB: Ok({}), SEEK_HOLE from 2 MiB: Ok({})",
            5 * GIB,
            2 << 20
        )
    );
    assert_eq!(
        seen[3],
        format!(
            "past 4 GiB: [0, 0, 0, 120, 121, 122] size {}",
            5 * GIB + 126
        )
    );
}

/// utimensat with times before 1970 (fuser decodes them wrongly), on symlinks, with
/// UTIME_OMIT; chown of a symlink; chown clearing set-uid.
#[test]
fn times_and_owners_like_overlay() {
    let seen = like_overlay(Scenario {
        layer: |l| {
            write(&l.join("t"), b"t", 0o644);
            write(&l.join("suid"), b"s", 0o4755);
            std::os::unix::fs::symlink("t", l.join("sym")).unwrap();
        },
        act: |m, _| {
            let mut o = Vec::new();
            let ts = |s, n| Timespec {
                tv_sec: s,
                tv_nsec: n,
            };
            let stamp = |p: &Path| {
                let meta = fs::symlink_metadata(p).unwrap();
                format!(
                    "{}.{:09} {}.{:09}",
                    meta.atime(),
                    meta.atime_nsec(),
                    meta.mtime(),
                    meta.mtime_nsec()
                )
            };
            for (access, modification) in [
                (ts(-100, 250), ts(-1, 999_999_999)),
                (ts(-86_400 * 365 * 30, 0), ts(0, 1)),
                (ts(1_000_000_000, 5), ts(1_100_000_000, 7)),
            ] {
                let times = Timestamps {
                    last_access: access,
                    last_modification: modification,
                };
                rustix::fs::utimensat(CWD, m.join("t").as_path(), &times, AtFlags::empty())
                    .unwrap();
                o.push(format!("t: {}", stamp(&m.join("t"))));
            }
            let omit = Timestamps {
                last_access: ts(0, libc::UTIME_OMIT as _),
                last_modification: ts(1_200_000_000, 0),
            };
            rustix::fs::utimensat(CWD, m.join("t").as_path(), &omit, AtFlags::empty()).unwrap();
            o.push(format!("t after UTIME_OMIT: {}", stamp(&m.join("t"))));
            let times = Timestamps {
                last_access: ts(-5, 5),
                last_modification: ts(-7, 7),
            };
            rustix::fs::utimensat(
                CWD,
                m.join("sym").as_path(),
                &times,
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
            o.push(format!("sym: {}", stamp(&m.join("sym"))));
            std::os::unix::fs::lchown(m.join("sym"), Some(5), Some(6)).unwrap();
            let (l, t) = (
                fs::symlink_metadata(m.join("sym")).unwrap(),
                fs::metadata(m.join("t")).unwrap(),
            );
            o.push(format!(
                "lchown: link {}:{} target {}:{}",
                l.uid(),
                l.gid(),
                t.uid(),
                t.gid()
            ));
            std::os::unix::fs::chown(m.join("suid"), Some(1000), None).unwrap();
            o.push(format!(
                "chown of set-uid file: {:o}",
                fs::metadata(m.join("suid")).unwrap().mode()
            ));
            o
        },
    });
    assert_eq!(seen[0], "t: -100.000000250 -1.999999999");
    assert_eq!(seen[1], "t: -946080000.000000000 0.000000001");
    assert_eq!(seen[4], "sym: -5.000000005 -7.000000007");
}

/// xattrs of a lower file: listed, copied up with the file, set, replaced and removed with
/// the same errors as overlayfs.
#[test]
fn xattrs_of_lower_files() {
    let seen = like_overlay(Scenario {
        layer: |l| {
            write(&l.join("f"), b"f", 0o644);
            fs::create_dir(l.join("d")).unwrap();
            for (path, name, value) in [
                ("f", "user.keep", "1"),
                ("f", "user.drop", "2"),
                ("d", "user.dir", "3"),
            ] {
                rustix::fs::lsetxattr(
                    l.join(path).as_path(),
                    name,
                    value.as_bytes(),
                    XattrFlags::empty(),
                )
                .unwrap();
            }
            std::os::unix::fs::symlink("f", l.join("sym")).unwrap();
        },
        act: |m, upper| {
            let mut o = Vec::new();
            let list = |p: &Path| {
                let mut buf = vec![0u8; 1024];
                let n = rustix::fs::llistxattr(p, &mut buf).unwrap();
                let mut names: Vec<String> = buf[..n]
                    .split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
                names.sort();
                names.join(",")
            };
            let f = m.join("f");
            o.push(format!("lower: {}", list(&f)));
            let set =
                |p: &Path, name: &str, flags| errno(rustix::fs::lsetxattr(p, name, b"v", flags));
            o.push(format!(
                "create existing: {}",
                set(&f, "user.keep", XattrFlags::CREATE)
            ));
            o.push(format!(
                "replace missing: {}",
                set(&f, "user.none", XattrFlags::REPLACE)
            ));
            o.push(format!(
                "remove missing: {}",
                errno(rustix::fs::lremovexattr(f.as_path(), "user.none"))
            ));
            o.push(format!(
                "set new: {}",
                set(&f, "user.new", XattrFlags::CREATE)
            ));
            o.push(format!(
                "remove lower one: {}",
                errno(rustix::fs::lremovexattr(f.as_path(), "user.drop"))
            ));
            o.push(format!(
                "after: {} upper copy: {}",
                list(&f),
                list(&upper.join("f"))
                    .split(',')
                    .filter(|n| !n.starts_with("trusted.overlay."))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            let mut buf = [0u8; 8];
            let n = rustix::fs::lgetxattr(f.as_path(), "user.keep", &mut buf).unwrap();
            o.push(format!(
                "user.keep = {:?}",
                String::from_utf8_lossy(&buf[..n])
            ));
            o.push(format!(
                "user.* on a symlink: {}",
                set(&m.join("sym"), "user.x", XattrFlags::empty())
            ));
            o.push(format!(
                "trusted.* on a lower dir: {}",
                set(&m.join("d"), "trusted.x", XattrFlags::empty())
            ));
            o.push(format!("dir: {}", list(&m.join("d"))));
            o
        },
    });
    assert_eq!(seen[0], "lower: user.drop,user.keep");
    assert_eq!(seen[5], "remove lower one: ok");
    assert_eq!(
        seen[6],
        "after: user.keep,user.new upper copy: user.keep,user.new"
    );
    assert_eq!(seen[10], "dir: trusted.x,user.dir");
}

/// Device nodes (as root), statfs, fsync of files and directories, and inode numbers that
/// stay the same across a copy-up and after the kernel forgot the inode.
#[test]
fn devices_statfs_fsync_and_inode_numbers() {
    let seen = like_overlay(Scenario {
        layer: |l| {
            write(&l.join("f"), b"f", 0o644);
            write(&l.join("d/g"), b"g", 0o644);
        },
        act: |m, upper| {
            let mut o = Vec::new();
            for (name, kind, dev) in [
                (
                    "null",
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::makedev(1, 3),
                ),
                (
                    "blk",
                    rustix::fs::FileType::BlockDevice,
                    rustix::fs::makedev(300, 70_000),
                ),
                ("fifo", rustix::fs::FileType::Fifo, 0),
                ("sock", rustix::fs::FileType::Socket, 0),
            ] {
                let r = rustix::fs::mknodat(
                    CWD,
                    m.join(name).as_path(),
                    kind,
                    rustix::fs::Mode::from_raw_mode(0o640),
                    dev,
                );
                let meta = fs::symlink_metadata(m.join(name)).unwrap();
                let up = fs::symlink_metadata(upper.join(name)).unwrap();
                o.push(format!(
                    "mknod {name}: {} mode {:o} rdev {}:{} upper rdev {}:{}",
                    errno(r),
                    meta.mode(),
                    rustix::fs::major(meta.rdev()),
                    rustix::fs::minor(meta.rdev()),
                    rustix::fs::major(up.rdev()),
                    rustix::fs::minor(up.rdev()),
                ));
            }
            let whiteout = rustix::fs::mknodat(
                CWD,
                m.join("wh").as_path(),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            );
            o.push(format!(
                "mknod of a 0/0 device (a whiteout): {}, then lstat: {}, in the upper dir: {}",
                errno(whiteout),
                errno(fs::symlink_metadata(m.join("wh"))),
                errno(fs::symlink_metadata(upper.join("wh")))
            ));
            let mut buf = [0u8; 4];
            o.push(format!(
                "read of the null device: {:?}",
                fs::File::open(m.join("null"))
                    .and_then(|mut f| f.read(&mut buf))
                    .ok()
            ));
            let (a, b) = (
                rustix::fs::statvfs(m).unwrap(),
                rustix::fs::statvfs(upper).unwrap(),
            );
            o.push(format!(
                "statfs like the upper dir's filesystem: bsize {} blocks {} files {} namemax {}",
                a.f_bsize == b.f_bsize,
                a.f_blocks == b.f_blocks,
                a.f_files == b.f_files,
                a.f_namemax
            ));
            let f = fs::OpenOptions::new()
                .write(true)
                .open(m.join("f"))
                .unwrap();
            o.push(format!(
                "fsync {} fdatasync {}",
                errno(f.sync_all()),
                errno(f.sync_data())
            ));
            let dir = fs::File::open(m.join("d")).unwrap();
            o.push(format!("fsync of a dir {}", errno(dir.sync_all())));
            // SAFETY: syncfs of an open descriptor.
            o.push(format!("syncfs {}", unsafe {
                libc::syncfs(dir.as_raw_fd())
            }));
            drop((f, dir));
            let ino = |p: PathBuf| fs::symlink_metadata(p).unwrap().ino();
            let (f1, g1, d1) = (ino(m.join("f")), ino(m.join("d/g")), ino(m.join("d")));
            fs::set_permissions(m.join("d/g"), fs::Permissions::from_mode(0o600)).unwrap();
            fs::write("/proc/sys/vm/drop_caches", "2").expect("drop dentries and inodes");
            o.push(format!(
                "inode numbers kept: written file {} chmod'ed file {} its dir {}",
                f1 == ino(m.join("f")),
                g1 == ino(m.join("d/g")),
                d1 == ino(m.join("d"))
            ));
            o
        },
    });
    assert_eq!(seen[0], "mknod null: ok mode 20640 rdev 1:3 upper rdev 1:3");
    assert_eq!(
        seen[1],
        "mknod blk: ok mode 60640 rdev 300:70000 upper rdev 300:70000"
    );
    assert_eq!(
        seen[4],
        "mknod of a 0/0 device (a whiteout): errno 1, then lstat: errno 2, in the upper dir: errno 2"
    );
    assert_eq!(seen[5], "read of the null device: Some(0)");
    assert_eq!(
        seen[6],
        "statfs like the upper dir's filesystem: bsize true blocks true files true namemax 255"
    );
    assert_eq!(
        seen[10],
        "inode numbers kept: written file true chmod'ed file true its dir true"
    );
}

/// Shared writable mappings: written through the mapping, read back with read(2) while mapped
/// (same page cache) and after unmapping and dropping the caches (written to the upper file).
#[test]
fn mmap_writes_read_back() {
    let seen = like_overlay(Scenario {
        layer: |l| write(&l.join("lower"), &[b'a'; 8192], 0o644),
        act: |m, upper| {
            let mut o = Vec::new();
            for (name, create) in [("new", true), ("lower", false)] {
                let f = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(create)
                    .truncate(false)
                    .open(m.join(name))
                    .unwrap();
                if create {
                    f.set_len(3 * 4096).unwrap();
                }
                let len = f.metadata().unwrap().len() as usize;
                // SAFETY: a fresh shared mapping of the whole file, unmapped below; the slice
                // does not outlive it.
                unsafe {
                    let ptr = libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        f.as_raw_fd(),
                        0,
                    );
                    assert_ne!(ptr, libc::MAP_FAILED, "mmap of {name}");
                    let bytes = std::slice::from_raw_parts_mut(ptr as *mut u8, len);
                    bytes[0] = b'Q';
                    bytes[5000] = b'R';
                    bytes[len - 1] = b'S';
                    let other = fs::File::open(m.join(name)).unwrap();
                    let mut one = [0u8; 1];
                    other.read_exact_at(&mut one, 5000).unwrap();
                    o.push(format!("{name}: read while mapped {:?}", one[0] as char));
                    libc::munmap(ptr, len);
                }
                drop(f);
                fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches");
                let data = fs::read(m.join(name)).unwrap();
                let up = fs::read(upper.join(name)).unwrap();
                o.push(format!(
                    "{name}: after unmap {}{}{} upper {}{}{}",
                    data[0] as char,
                    data[5000] as char,
                    data[len - 1] as char,
                    up[0] as char,
                    up[5000] as char,
                    up[len - 1] as char
                ));
            }
            o
        },
    });
    assert_eq!(
        seen,
        [
            "new: read while mapped 'R'",
            "new: after unmap QRS upper QRS",
            "lower: read while mapped 'R'",
            "lower: after unmap QRS upper QRS"
        ]
    );
}

/// rename(2) with RENAME_EXCHANGE (`mv --exchange`): files of either layer swap, a purely
/// upper directory swaps with a file (and is opaque where it lands in a merged directory), a
/// directory from a lower layer cannot move (EXDEV).
#[test]
fn rename_exchange() {
    let seen = like_overlay(Scenario {
        layer: |l| {
            write(&l.join("f"), b"lower f", 0o644);
            write(&l.join("g"), b"lower g", 0o600);
            write(&l.join("sub/h"), b"lower h", 0o644);
            write(&l.join("lowerdir/x"), b"x", 0o644);
            write(&l.join("sub/newdir"), b"lower file under the name", 0o644);
            write(&l.join("sub/gone/inner"), b"hidden", 0o644);
        },
        act: |m, _| {
            let mut o = Vec::new();
            let exchange = |a: &str, b: &str| {
                errno(rustix::fs::renameat_with(
                    CWD,
                    m.join(a).as_path(),
                    CWD,
                    m.join(b).as_path(),
                    rustix::fs::RenameFlags::EXCHANGE,
                ))
            };
            fs::write(m.join("u1"), b"upper 1").unwrap();
            fs::write(m.join("sub/u2"), b"upper 2").unwrap();
            o.push(format!("upper files: {}", exchange("u1", "sub/u2")));
            o.push(format!("lower files: {}", exchange("f", "g")));
            o.push(format!("lower and upper: {}", exchange("sub/h", "u1")));
            for name in ["u1", "sub/u2", "f", "g", "sub/h"] {
                let meta = fs::metadata(m.join(name)).unwrap();
                o.push(format!(
                    "{name}: {:?} {:o}",
                    read(&m.join(name)),
                    meta.mode()
                ));
            }
            fs::create_dir(m.join("fresh")).unwrap();
            fs::write(m.join("fresh/inside"), b"in").unwrap();
            o.push(format!(
                "upper dir and lower file: {}",
                exchange("fresh", "sub/newdir")
            ));
            let mut names: Vec<String> = fs::read_dir(m.join("sub/newdir"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            o.push(format!(
                "sub/newdir holds {names:?}, fresh is {:?}",
                read(&m.join("fresh"))
            ));
            o.push(format!("lower dir: {}", exchange("lowerdir", "f")));
            // A purely upper dir that lands where a lower layer had a (deleted) dir.
            fs::remove_dir_all(m.join("sub/gone")).unwrap();
            fs::write(m.join("sub/gone"), b"file over a deleted dir").unwrap();
            fs::create_dir(m.join("other")).unwrap();
            fs::write(m.join("other/mine"), b"mine").unwrap();
            o.push(format!(
                "upper dir over a deleted lower dir: {}",
                exchange("other", "sub/gone")
            ));
            let names: Vec<String> = fs::read_dir(m.join("sub/gone"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            o.push(format!("sub/gone holds {names:?}"));
            o
        },
    });
    assert_eq!(
        seen[..3],
        ["upper files: ok", "lower files: ok", "lower and upper: ok"]
    );
    assert_eq!(seen[3], "u1: \"lower h\" 100644");
    assert_eq!(seen[5], "f: \"lower g\" 100600");
    assert_eq!(
        seen[8..],
        [
            "upper dir and lower file: ok",
            "sub/newdir holds [\"inside\"], fresh is \"lower file under the name\"",
            "lower dir: errno 18",
            "upper dir over a deleted lower dir: ok",
            "sub/gone holds [\"mine\"]"
        ]
    );
}

/// Copy-up happens once per file: later writes, chmod, xattrs, truncates and renames act on
/// the same upper file (its real inode stays), data and metadata carried over.
#[test]
fn copy_up_happens_once_per_file() {
    let seen = like_overlay(Scenario {
        layer: |l| {
            write(&l.join("d/f"), b"lower", 0o640);
            std::os::unix::fs::chown(l.join("d/f"), Some(7), Some(8)).unwrap();
        },
        act: |m, upper| {
            let mut o = Vec::new();
            let real = || fs::metadata(upper.join("d/f")).map(|meta| meta.ino());
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(m.join("d/f"))
                .unwrap();
            f.write_all(b"+1").unwrap();
            drop(f);
            let first = real().unwrap();
            let meta = fs::metadata(upper.join("d/f")).unwrap();
            o.push(format!(
                "copied up with owner {}:{} mode {:o}",
                meta.uid(),
                meta.gid(),
                meta.mode() & 0o7777
            ));
            fs::set_permissions(m.join("d/f"), fs::Permissions::from_mode(0o600)).unwrap();
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(m.join("d/f"))
                .unwrap();
            f.write_all(b"+2").unwrap();
            drop(f);
            rustix::fs::lsetxattr(m.join("d/f").as_path(), "user.x", b"1", XattrFlags::empty())
                .unwrap();
            fs::OpenOptions::new()
                .write(true)
                .open(m.join("d/f"))
                .unwrap()
                .set_len(9)
                .unwrap();
            o.push(format!(
                "same upper file after chmod, write, setxattr, truncate: {}",
                real().unwrap() == first
            ));
            fs::rename(m.join("d/f"), m.join("d/g")).unwrap();
            let moved = fs::metadata(upper.join("d/g")).unwrap().ino();
            o.push(format!(
                "renamed, not copied again: {} content {:?}",
                moved == first,
                read(&m.join("d/g"))
            ));
            o
        },
    });
    assert_eq!(
        seen,
        [
            "copied up with owner 7:8 mode 640",
            "same upper file after chmod, write, setxattr, truncate: true",
            "renamed, not copied again: true content \"lower+1+2\""
        ]
    );
}
