//! Edge cases of the FUSE union driver, each run on kernel overlayfs and on FUSE over the same
//! layers: both must report the same results (overlay is the oracle, and the key facts are
//! asserted outright too), and what the FUSE mount shows must be what its upper dir holds (the
//! layers plus the upper dir, mounted read-only with overlay afterwards, look the same).

mod fuse_support;

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use fuse_support::{assert_same_tree, snapshot, MountDirs};
use rbuild_layerfs::mount::{mount_union, Driver, MountSpec};

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
