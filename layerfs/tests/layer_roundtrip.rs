//! write_layer -> apply_layer round trips on a hand-made overlay upper dir (run as root).

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use common::{assert_same_tree, snapshot};
use rbuild_layerfs::layer::{apply_layer, write_layer, ApplyLimits, Compression, WriteOptions};
use rbuild_layerfs::Digest;
use rustix::fs::XattrFlags;

/// A vfs_cap_data v2 value granting cap_net_bind_service (bit 10), effective.
const CAP_NET_BIND: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

const LONG_DIR: &str = "a-directory-name-that-is-long-enough-to-need-more-than-the-ustar-fields-provide-when-combined-with-the-file";

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).unwrap();
}

/// An upper dir with every kind of entry the writer must handle.
fn make_upper(upper: &Path) {
    let p = |s: &str| upper.join(s);
    std::fs::create_dir_all(p("etc/conf.d")).unwrap();
    std::fs::write(p("etc/conf.d/app.conf"), b"key=value\n").unwrap();
    std::fs::write(p("etc/hostname"), b"box\n").unwrap();
    std::fs::create_dir(p("bin")).unwrap();
    std::fs::write(p("bin/tool"), vec![7u8; 70_000]).unwrap();
    std::fs::set_permissions(p("bin/tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(p("bin/ping"), b"ping").unwrap();
    set_xattr(&p("bin/ping"), "security.capability", &CAP_NET_BIND);
    set_xattr(&p("bin/ping"), "user.note", b"kept");
    set_xattr(&p("bin/ping"), "trusted.overlay.origin", b"dropped");
    std::fs::hard_link(p("bin/tool"), p("bin/tool-again")).unwrap();
    symlink("tool", p("bin/tool-link")).unwrap();
    symlink("/etc/hostname", p("bin/abs-link")).unwrap();
    // Overlay deletion of a lower file and an opaque directory.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("etc/removed"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
    std::fs::create_dir(p("var")).unwrap();
    set_xattr(&p("var"), "trusted.overlay.opaque", b"y");
    std::fs::write(p("var/fresh"), b"new").unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("var/pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    std::fs::create_dir(p("home")).unwrap();
    std::fs::write(p("home/caf\u{e9}"), b"utf8").unwrap();
    std::fs::write(
        upper.join(OsStr::from_bytes(b"home/latin1-\xe9")),
        b"not utf8",
    )
    .unwrap();
    std::fs::create_dir_all(p(LONG_DIR)).unwrap();
    std::fs::write(p(&format!("{LONG_DIR}/file-with-a-long-name-too")), b"long").unwrap();
    std::os::unix::fs::chown(p("home"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::lchown(p("bin/tool-link"), Some(1000), Some(100)).unwrap();
}

/// One entry of a plain tar: name, type flag, PAX records, uid, mtime.
type TarItem = (String, char, BTreeMap<String, Vec<u8>>, u64, u64);

/// The entries of a plain tar, in order.
fn list_tar(tar_bytes: &[u8]) -> Vec<TarItem> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let header = entry.header().clone();
        assert!(
            header.username_bytes().is_none_or(|u| u.is_empty()),
            "{name} has a user name"
        );
        assert!(
            header.groupname_bytes().is_none_or(|g| g.is_empty()),
            "{name} has a group name"
        );
        let mut pax = BTreeMap::new();
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                pax.insert(ext.key().unwrap().to_string(), ext.value_bytes().to_vec());
            }
        }
        out.push((
            name,
            header.entry_type().as_byte() as char,
            pax,
            header.uid().unwrap(),
            header.mtime().unwrap(),
        ));
    }
    out
}

#[test]
fn plain_layer_has_oci_whiteouts_sorted_entries_and_kept_capabilities() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    std::fs::create_dir(&upper).unwrap();
    make_upper(&upper);

    let opts = WriteOptions {
        compression: Compression::None,
        mtime_clamp: None,
    };
    let mut blob = Vec::new();
    let info = write_layer(&upper, &opts, &mut blob).unwrap();
    assert_eq!(info.digest, Digest::of_bytes(&blob));
    assert_eq!(
        info.diff_id, info.digest,
        "an uncompressed blob is its own diff"
    );
    assert_eq!(info.size, blob.len() as u64);
    assert_eq!(info.media_type, "application/vnd.oci.image.layer.v1.tar");

    let entries = list_tar(&blob);
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    for expected in [
        "bin/",
        "bin/abs-link",
        "bin/ping",
        "bin/tool",
        "bin/tool-again",
        "etc/.wh.removed",
        "var/",
        "var/.wh..wh..opq",
        "var/fresh",
        "var/pipe",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("bin/") < pos("bin/abs-link") && pos("bin/abs-link") < pos("bin/ping"));
    assert!(
        pos("var/") + 1 == pos("var/.wh..wh..opq"),
        "opaque marker follows its dir"
    );
    assert!(pos("etc/") < pos("etc/conf.d/") && pos("etc/conf.d/app.conf") < pos("etc/hostname"));
    let by_name = |n: &str| entries.iter().find(|e| e.0 == n).unwrap();
    assert_eq!(
        by_name("bin/tool-again").1,
        '1',
        "second link of an inode is a hard link"
    );
    assert_eq!(by_name("bin/tool").1, '0');
    assert_eq!(by_name("bin/tool-link").3, 1000, "numeric uid kept");
    let ping_pax = &by_name("bin/ping").2;
    assert_eq!(ping_pax["SCHILY.xattr.security.capability"], CAP_NET_BIND);
    assert_eq!(ping_pax["SCHILY.xattr.user.note"], b"kept");
    assert!(entries
        .iter()
        .all(|e| e.2.keys().all(|k| !k.contains("overlay"))));
    assert!(!names
        .iter()
        .any(|n| n.contains("removed") && !n.contains(".wh.")));

    // Writing again gives the very same bytes.
    let mut again = Vec::new();
    assert_eq!(write_layer(&upper, &opts, &mut again).unwrap(), info);
    assert_eq!(again, blob);
}

#[test]
fn apply_of_a_written_layer_recreates_the_upper_dir() {
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        std::fs::create_dir(&upper).unwrap();
        make_upper(&upper);
        let opts = WriteOptions {
            compression,
            mtime_clamp: None,
        };
        let mut blob = Vec::new();
        let info = write_layer(&upper, &opts, &mut blob).unwrap();
        assert_eq!(info.digest, Digest::of_bytes(&blob));
        assert_eq!(info.media_type, compression.media_type());

        let dest = tmp.path().join("applied");
        let stats = apply_layer(&blob[..], &dest, &ApplyLimits::default()).unwrap();
        assert_eq!(
            stats.diff_id, info.diff_id,
            "{compression:?}: diff_id differs"
        );
        assert_eq!(stats.whiteouts, 1);
        assert_eq!(stats.opaque_dirs, 1);

        let mut want = snapshot(&upper);
        // The only thing a layer does not carry: overlay's private origin xattr.
        want.get_mut(&b"bin/ping"[..])
            .unwrap()
            .xattrs
            .remove(&b"trusted.overlay.origin"[..]);
        assert_same_tree(&want, &snapshot(&dest));
        let tool = std::fs::metadata(dest.join("bin/tool")).unwrap();
        let again = std::fs::metadata(dest.join("bin/tool-again")).unwrap();
        assert_eq!(tool.ino(), again.ino(), "hard link restored");
        assert_eq!(
            std::fs::symlink_metadata(dest.join("bin/tool-link"))
                .unwrap()
                .mtime(),
            std::fs::symlink_metadata(upper.join("bin/tool-link"))
                .unwrap()
                .mtime()
        );
        assert_eq!(
            std::fs::metadata(dest.join("etc")).unwrap().mtime(),
            std::fs::metadata(upper.join("etc")).unwrap().mtime(),
            "directory mtimes are set after their children"
        );
    }
}

#[test]
fn gzip_blob_decompresses_to_the_diff_id() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    std::fs::create_dir(&upper).unwrap();
    make_upper(&upper);
    let mut blob = Vec::new();
    let info = write_layer(&upper, &WriteOptions::default(), &mut blob).unwrap();
    assert_eq!(&blob[..2], &[0x1f, 0x8b]);
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(Digest::of_bytes(&tar_bytes), info.diff_id);
    let mut plain = Vec::new();
    let plain_info = write_layer(
        &upper,
        &WriteOptions {
            compression: Compression::None,
            mtime_clamp: None,
        },
        &mut plain,
    )
    .unwrap();
    assert_eq!(
        plain_info.diff_id, info.diff_id,
        "diff_id does not depend on compression"
    );
}

#[test]
fn mtime_clamp_caps_every_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    std::fs::create_dir(&upper).unwrap();
    make_upper(&upper);
    let clamp = 1_000_000_000;
    let mut blob = Vec::new();
    write_layer(
        &upper,
        &WriteOptions {
            compression: Compression::None,
            mtime_clamp: Some(clamp),
        },
        &mut blob,
    )
    .unwrap();
    let entries = list_tar(&blob);
    assert!(!entries.is_empty());
    for (name, _, _, _, mtime) in entries {
        assert!(mtime <= clamp as u64, "{name} has mtime {mtime}");
    }
}

#[test]
fn empty_upper_dir_gives_an_empty_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let mut blob = Vec::new();
    let info = write_layer(
        tmp.path(),
        &WriteOptions {
            compression: Compression::None,
            mtime_clamp: None,
        },
        &mut blob,
    )
    .unwrap();
    assert_eq!(blob, vec![0u8; 1024]);
    assert_eq!(info.diff_id, Digest::of_bytes(&[0u8; 1024]));
}

/// A sink that fails after `left` bytes.
struct FailingSink {
    left: usize,
}

impl std::io::Write for FailingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_errors_are_reported_not_hung_on() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    std::fs::create_dir(&upper).unwrap();
    for i in 0..64 {
        std::fs::write(upper.join(format!("f{i}")), vec![i as u8; 100_000]).unwrap();
    }
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let opts = WriteOptions {
            compression,
            mtime_clamp: None,
        };
        let err = write_layer(&upper, &opts, FailingSink { left: 100 }).unwrap_err();
        assert!(
            err.to_string().contains("disk full"),
            "{compression:?}: {err}"
        );
    }
    let missing = tmp.path().join("missing");
    let err = write_layer(&missing, &WriteOptions::default(), std::io::sink()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

/// The same files with the same xattrs make the same layer whatever order the xattrs were set
/// in (listxattr reports insertion order: an overlayfs and a FUSE copy-up differ there).
#[test]
fn xattrs_are_written_in_name_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for (dir, names) in [
        ("one", ["user.b", "user.a", "security.capability"]),
        ("two", ["security.capability", "user.a", "user.b"]),
    ] {
        let upper = tmp.path().join(dir);
        std::fs::create_dir_all(upper.join("d")).unwrap();
        std::fs::write(upper.join("d/f"), b"f").unwrap();
        for path in [upper.join("d"), upper.join("d/f")] {
            for name in names {
                let value: &[u8] = if name == "security.capability" {
                    &CAP_NET_BIND
                } else {
                    name.as_bytes()
                };
                set_xattr(&path, name, value);
            }
            rustix::fs::utimensat(
                rustix::fs::CWD,
                &path,
                &rustix::fs::Timestamps {
                    last_access: rustix::fs::Timespec {
                        tv_sec: 1,
                        tv_nsec: 0,
                    },
                    last_modification: rustix::fs::Timespec {
                        tv_sec: 1,
                        tv_nsec: 0,
                    },
                },
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
        std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut tar = Vec::new();
        let opts = WriteOptions {
            compression: Compression::None,
            mtime_clamp: None,
        };
        ids.push(write_layer(&upper, &opts, &mut tar).unwrap().diff_id);
        let text = String::from_utf8_lossy(&tar);
        let order: Vec<usize> = ["security.capability=", "user.a=", "user.b="]
            .iter()
            .map(|key| text.find(key).expect("xattr record"))
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{dir}: records not in name order"
        );
    }
    assert_eq!(ids[0], ids[1]);
}
