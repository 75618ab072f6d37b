//! The FUSE union driver against the real kernel: merged view, copy-up and the upper-dir format.

mod fuse_support;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use fuse_support::{make_layers, MountDirs};
use rbuild_layerfs::mount::fuse::whiteout::is_opaque;
use rbuild_layerfs::mount::Driver;

fn is_whiteout(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

#[test]
fn merged_view_applies_whiteouts_opaque_dirs_and_overrides() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layers = make_layers(tmp.path());
    let dirs = MountDirs::new(tmp.path(), "fuse");
    let mount = dirs.mount(&layers, Driver::Fuse);
    let m = mount.target();

    assert_eq!(
        fs::read(m.join("etc/passwd")).unwrap(),
        b"root:x:0:0::/root:/bin/ash\n"
    );
    assert!(
        !m.join("etc/shadow").exists(),
        "whiteout must hide etc/shadow"
    );
    assert!(
        !m.join("var/cache").exists(),
        "whiteout must hide a whole dir"
    );
    assert!(m.join("var").is_dir());
    assert!(
        !m.join("opaque/sub").exists(),
        "opaque dir must hide lower entries"
    );
    assert_eq!(fs::read(m.join("opaque/visible")).unwrap(), b"visible");
    let mut names: Vec<String> = fs::read_dir(m.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c", "fifo", "link"]);
    assert_eq!(
        fs::read_link(m.join("data/link")).unwrap(),
        Path::new("../etc/passwd")
    );
    assert_eq!(
        fs::read(m.join("data/link")).unwrap(),
        b"root:x:0:0::/root:/bin/ash\n"
    );
    assert!(fs::symlink_metadata(m.join("data/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(fs::read(m.join("bin/tool")).unwrap().len(), 70_000);
    let meta = fs::metadata(m.join("usr/bin/tool")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    // Stable inode numbers across lookups.
    let ino = meta.ino();
    assert_eq!(fs::metadata(m.join("bin/tool")).unwrap().ino(), ino);
    // Nothing was copied up by reading.
    assert_eq!(fs::read_dir(&dirs.upper).unwrap().count(), 0);
}

#[test]
fn writes_copy_up_once_and_leave_overlay_format() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layers = make_layers(tmp.path());
    let dirs = MountDirs::new(tmp.path(), "fuse");
    let mount = dirs.mount(&layers, Driver::Fuse);
    let m = mount.target();
    let up = &dirs.upper;

    // Copy-up on write keeps metadata and inode number.
    let ino = fs::metadata(m.join("usr/lib/deep/er/lib.so"))
        .unwrap()
        .ino();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.join("usr/lib/deep/er/lib.so"))
        .unwrap();
    f.write_all(b"+more").unwrap();
    drop(f);
    assert_eq!(
        fs::read(up.join("usr/lib/deep/er/lib.so")).unwrap(),
        b"ELF+more"
    );
    assert_eq!(
        fs::metadata(m.join("usr/lib/deep/er/lib.so"))
            .unwrap()
            .ino(),
        ino
    );
    assert_eq!(
        fs::metadata(up.join("usr/lib/deep/er/lib.so"))
            .unwrap()
            .mode()
            & 0o7777,
        0o644
    );

    // unlink of a lower file leaves a whiteout; rmdir of a lower dir too.
    fs::remove_file(m.join("data/a")).unwrap();
    assert!(is_whiteout(&up.join("data/a")));
    fs::remove_file(m.join("usr/lib/deep/er/lib.so")).unwrap();
    fs::remove_dir(m.join("usr/lib/deep/er")).unwrap();
    assert!(is_whiteout(&up.join("usr/lib/deep/er")));
    assert!(!m.join("usr/lib/deep/er").exists());

    // mkdir over an upper whiteout is opaque (as overlay does); over a lower one it need not be.
    fs::create_dir(m.join("usr/lib/deep/er")).unwrap();
    assert!(is_opaque(&up.join("usr/lib/deep/er")));
    assert_eq!(fs::read_dir(m.join("usr/lib/deep/er")).unwrap().count(), 0);
    fs::create_dir(m.join("var/cache")).unwrap();
    assert!(!is_opaque(&up.join("var/cache")));
    assert_eq!(fs::read_dir(m.join("var/cache")).unwrap().count(), 0);
    // re-creating a file over a whiteout replaces it.
    fs::write(m.join("data/a"), b"again").unwrap();
    assert_eq!(fs::read(up.join("data/a")).unwrap(), b"again");

    // Rename of a lower dir copies the tree up and whiteouts the old name.
    fs::rename(m.join("usr/lib"), m.join("lib2")).unwrap();
    assert!(is_whiteout(&up.join("usr/lib")));
    assert!(m.join("lib2/deep/er").is_dir());
    assert_eq!(fs::read_dir(m.join("lib2/deep/er")).unwrap().count(), 0);
    assert!(!m.join("usr/lib").exists());

    // chmod, chown, truncate, utimens, xattr, hard links, symlinks.
    fs::set_permissions(m.join("etc/passwd"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(m.join("etc/passwd"), Some(1000), Some(1000)).unwrap();
    let meta = fs::metadata(m.join("etc/passwd")).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o600, 1000, 1000)
    );
    fs::OpenOptions::new()
        .write(true)
        .open(m.join("usr/bin/tool"))
        .unwrap()
        .set_len(10)
        .unwrap();
    assert_eq!(fs::metadata(m.join("usr/bin/tool")).unwrap().len(), 10);
    rustix::fs::lsetxattr(
        m.join("data/b").as_path(),
        "user.test",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let mut buf = [0u8; 8];
    let n = rustix::fs::lgetxattr(m.join("data/b").as_path(), "user.test", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"v");
    fs::hard_link(m.join("data/b"), m.join("data/b2")).unwrap();
    assert_eq!(fs::metadata(m.join("data/b")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(m.join("data/b2")).unwrap().ino(),
        fs::metadata(m.join("data/b")).unwrap().ino()
    );
    std::os::unix::fs::symlink("target", m.join("data/sl")).unwrap();
    assert_eq!(
        fs::read_link(up.join("data/sl")).unwrap(),
        Path::new("target")
    );

    // Large sparse-ish file, read back through mmap-able regular I/O.
    let mut big = fs::File::create(m.join("big")).unwrap();
    big.seek(SeekFrom::Start(3 << 30)).unwrap();
    big.write_all(b"end").unwrap();
    drop(big);
    let mut big = fs::File::open(m.join("big")).unwrap();
    big.seek(SeekFrom::Start(3 << 30)).unwrap();
    let mut tail = String::new();
    big.read_to_string(&mut tail).unwrap();
    assert_eq!(tail, "end");
    drop(big);

    // mknod as root.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        m.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    assert!(fs::symlink_metadata(up.join("null"))
        .unwrap()
        .file_type()
        .is_char_device());
    let vfs = rustix::fs::statvfs(m).unwrap();
    assert!(vfs.f_blocks > 0);
    drop(mount);
}

#[test]
fn shared_writable_mmap_reaches_the_upper_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layers = make_layers(tmp.path());
    let dirs = MountDirs::new(tmp.path(), "fuse");
    let mount = dirs.mount(&layers, Driver::Fuse);
    let path = mount.target().join("data/c");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a fresh shared mapping of `len` bytes of an open file, unmapped before return.
    unsafe {
        use std::os::fd::AsRawFd;
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(ptr, libc::MAP_FAILED, "mmap of a FUSE file failed");
        let bytes = std::slice::from_raw_parts_mut(ptr as *mut u8, len);
        assert_eq!(bytes, b"data c");
        bytes[0] = b'D';
        assert_eq!(libc::msync(ptr, len, libc::MS_SYNC), 0);
        assert_eq!(libc::munmap(ptr, len), 0);
    }
    drop(file);
    assert_eq!(fs::read(dirs.upper.join("data/c")).unwrap(), b"Data c");
    drop(mount);
}

#[test]
fn unlinked_open_file_keeps_working_like_overlay() {
    for (name, driver) in [("overlay", Driver::Overlay), ("fuse", Driver::Fuse)] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layers = make_layers(tmp.path());
        let dirs = MountDirs::new(tmp.path(), name);
        let mount = dirs.mount(&layers, driver);
        let path = mount.target().join("scratch");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create scratch");
        file.write_all(b"hello world").expect("write");
        fs::remove_file(&path).expect("unlink while open");
        file.set_len(5).expect("ftruncate unlinked file");
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .expect("fchmod unlinked file");
        let meta = file.metadata().expect("fstat unlinked file");
        assert_eq!(meta.len(), 5, "{name}: size after ftruncate");
        assert_eq!(meta.mode() & 0o7777, 0o600, "{name}: mode after fchmod");
        assert_eq!(meta.nlink(), 0, "{name}: link count of an unlinked file");
        let mut data = String::new();
        file.seek(SeekFrom::Start(0)).expect("seek");
        file.read_to_string(&mut data).expect("read back");
        assert_eq!(data, "hello", "{name}: data after ftruncate");
        assert!(!path.exists(), "{name}: name is gone");
    }
}

/// A large lower-layer file is served by our threads (lower files are not passed through),
/// in 1 MiB requests several at a time once the mount's readahead window is widened: every
/// byte must still arrive in place, read sequentially, from the middle and through mmap.
#[test]
fn large_lower_file_reads_back_exactly_with_wide_readahead() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layers = make_layers(tmp.path());
    // 24 MiB + 123 bytes of a position-dependent pattern, so a misplaced chunk shows.
    let len = 24 * (1 << 20) + 123;
    let data: Vec<u8> = (0..len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(layers[0].join("usr/lib/big"), &data).unwrap();
    let dirs = MountDirs::new(tmp.path(), "fuse");
    let mount = dirs.mount(&layers, Driver::Fuse);
    let m = mount.target();

    let minor = rustix::fs::minor(fs::metadata(m).unwrap().dev());
    let readahead = fs::read_to_string(format!("/sys/class/bdi/0:{minor}/read_ahead_kb"))
        .expect("the mount's bdi in sysfs");
    assert_eq!(readahead.trim(), "4096", "readahead window of the mount");

    let mut whole = Vec::new();
    let mut file = fs::File::open(m.join("usr/lib/big")).unwrap();
    file.read_to_end(&mut whole).unwrap();
    assert!(whole == data, "sequential read differs");
    let mut middle = vec![0u8; 3 << 20];
    file.seek(SeekFrom::Start(7_777_777)).unwrap();
    file.read_exact(&mut middle).unwrap();
    assert!(middle[..] == data[7_777_777..7_777_777 + (3 << 20)]);
    // SAFETY: a private read-only mapping of a file nobody writes, unmapped before return.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap");
    // SAFETY: the mapping above is `len` readable bytes until the munmap below.
    let same = unsafe { std::slice::from_raw_parts(map as *const u8, len) } == &data[..];
    // SAFETY: unmaps exactly the mapping made above, which nothing uses any more.
    assert_eq!(unsafe { libc::munmap(map, len) }, 0, "munmap");
    assert!(same, "mapped read differs");
    // Reading copied nothing up.
    assert!(!dirs.upper.join("usr/lib/big").exists());
}
