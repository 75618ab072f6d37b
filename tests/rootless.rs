//! rbuild without root: the store in $HOME, overlay refused so the FUSE driver mounts through
//! fusermount3, sandboxes in a one-id user namespace, and images whose files are root's (the
//! caller's own ids are recorded as 0). Runs the rbuild binary as user `nobody` (65534).

mod common;
#[path = "common/registry.rs"]
mod registry_server;

use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{busybox_rootfs, describe, mounts_below, unmount_below, TestRoot};
use registry_server::TestRegistry;

const NOBODY: u32 = 65534;

/// A scratch home owned by `nobody`, holding a copy of the rbuild binary; anything still
/// mounted below it is detached on drop.
struct RootlessHome {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl RootlessHome {
    fn new() -> RootlessHome {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-rootless-")
            .tempdir()
            .expect("tempdir");
        // The test binary's target dir may not be reachable for nobody: run a copy.
        let bin = dir.path().join("rbuild");
        fs::copy(common::rbuild_bin(), &bin).expect("copy rbuild");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod rbuild");
        let home = RootlessHome { dir, bin };
        chown(home.path(), Some(NOBODY), Some(NOBODY)).expect("chown home");
        home
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `rbuild ARGS...` as nobody, in `cwd`, with this home and nothing else inherited.
    fn rbuild(&self, cwd: &Path, args: &[&str]) -> Output {
        self.command(cwd, args).output().expect("run setpriv")
    }

    /// `rbuild ARGS...` as nobody, ready to run (setpriv execs rbuild: its pid is rbuild's).
    fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut command = Command::new("setpriv");
        command
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "--",
            ])
            .arg(&self.bin)
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("HOME", self.path())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .stdin(Stdio::null());
        command
    }

    fn ok(&self, cwd: &Path, args: &[&str]) -> Output {
        let out = self.rbuild(cwd, args);
        assert!(out.status.success(), "{}", describe(args, &out));
        out
    }
}

impl Drop for RootlessHome {
    fn drop(&mut self) {
        unmount_below(self.path());
    }
}

impl RootlessHome {
    /// Imports a busybox rootfs (owned by nobody, as the user's own files are) as `base:1`.
    fn import_base(&self) {
        let rootfs = self.path().join("rootfs");
        busybox_rootfs(&rootfs);
        let status = Command::new("chown")
            .args(["-R", "-h", &format!("{NOBODY}:{NOBODY}")])
            .arg(&rootfs)
            .status()
            .expect("chown rootfs");
        assert!(status.success());
        self.ok(self.path(), &["import", rootfs.to_str().unwrap(), "base:1"]);
    }

    /// A build context dir `name` owned by nobody, holding `dockerfile`.
    fn context(&self, name: &str, dockerfile: &str) -> PathBuf {
        let ctx = self.path().join(name);
        fs::create_dir_all(&ctx).expect("mkdir context");
        chown(&ctx, Some(NOBODY), Some(NOBODY)).expect("chown context");
        write_owned(&ctx.join("Dockerfile"), dockerfile);
        ctx
    }
}

/// Writes `path` as nobody would have it (owned by nobody).
fn write_owned(path: &Path, data: &str) {
    fs::write(path, data).expect("write");
    chown(path, Some(NOBODY), Some(NOBODY)).expect("chown");
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_user_without_root_builds_and_runs_images_whose_files_are_roots() {
    let home = RootlessHome::new();
    // Without access to /dev/fuse nothing can mount: scripts/install-deps opens it to all
    // users, as udev does on a standard Debian system.
    let fuse = fs::metadata("/dev/fuse").expect("/dev/fuse");
    assert!(
        fuse.mode() & 0o006 == 0o006,
        "/dev/fuse is mode {:o}: run scripts/install-deps (it makes it 0666, udev's default)",
        fuse.mode() & 0o777
    );

    let rootfs = home.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let status = Command::new("chown")
        .args(["-R", "-h", &format!("{NOBODY}:{NOBODY}")])
        .arg(&rootfs)
        .status()
        .expect("chown rootfs");
    assert!(status.success());
    let ctx = home.path().join("ctx");
    fs::create_dir(&ctx).expect("mkdir ctx");
    chown(&ctx, Some(NOBODY), Some(NOBODY)).expect("chown ctx");
    write_owned(&ctx.join("f"), "from the context\n");
    write_owned(
        &ctx.join("Dockerfile"),
        "FROM base:1\n\
         COPY f /f\n\
         COPY --chown=1000:1000 f /owned\n\
         RUN id -u > /uid && echo made > /made && mkdir /d\n\
         CMD [\"cat\", \"/uid\"]\n",
    );

    let rootfs_s = rootfs.to_str().unwrap();
    home.ok(home.path(), &["import", rootfs_s, "base:1"]);
    let out = home.ok(&ctx, &["build", "-t", "rl:1", "."]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("using the FUSE storage driver") && err.contains("no privilege"),
        "the fallback notice names the reason:\n{err}"
    );
    // The store is the user's, under $HOME.
    assert!(home.path().join(".local/share/rbuild/index.json").is_file());

    // The sandbox maps nobody to root: RUN ran as uid 0, and the image's files are root's.
    let out = home.ok(home.path(), &["run", "--rm", "rl:1"]);
    assert_eq!(stdout(&out).trim(), "0");
    let out = home.ok(
        home.path(),
        &[
            "run",
            "--rm",
            "rl:1",
            "stat",
            "-c",
            "%n %u:%g",
            "/f",
            "/owned",
            "/made",
            "/d",
            "/bin/busybox",
        ],
    );
    assert_eq!(
        stdout(&out),
        "/f 0:0\n/owned 0:0\n/made 0:0\n/d 0:0\n/bin/busybox 0:0\n",
        "a --chown to another user cannot be kept without root: the file stays root's"
    );

    // The saved layers record root as every owner, not nobody's ids.
    let archive = home.path().join("rl.tar");
    home.ok(
        home.path(),
        &["save", "-o", archive.to_str().unwrap(), "rl:1"],
    );
    let owners = owners_in_saved_layers(&archive);
    assert!(!owners.is_empty(), "no layer entries found");
    assert!(
        owners.iter().all(|(_, uid, gid)| (*uid, *gid) == (0, 0)),
        "layer entries not owned by root: {:?}",
        owners
            .iter()
            .filter(|(_, u, g)| (*u, *g) != (0, 0))
            .take(5)
            .collect::<Vec<_>>()
    );

    // A detached container, then its removal: the FUSE mounts go through fusermount3.
    home.ok(
        home.path(),
        &["run", "-d", "--name", "bg", "rl:1", "sleep", "30"],
    );
    let out = home.ok(home.path(), &["exec", "bg", "id", "-u"]);
    assert_eq!(stdout(&out).trim(), "0");
    home.ok(home.path(), &["rm", "-f", "bg"]);
    home.ok(home.path(), &["rmi", "rl:1"]);
    let left = mounts_below(home.path());
    assert!(left.is_empty(), "mounts left behind: {left:?}");

    // Another user id has no mapping in a rootless sandbox: the error says so.
    write_owned(&ctx.join("Dockerfile"), "FROM base:1\nUSER 1000\nRUN id\n");
    let args = ["build", "-t", "rl:2", "."];
    let out = home.rbuild(&ctx, &args);
    assert!(!out.status.success(), "{}", describe(&args, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:3")
            && err.contains("setuid 1000: without root")
            && err.contains("other user and group ids cannot be used"),
        "{err}"
    );
}

/// (path, uid, gid) of every entry of every layer in a `save`d archive.
fn owners_in_saved_layers(archive: &Path) -> Vec<(String, u64, u64)> {
    let mut outer = tar::Archive::new(fs::File::open(archive).expect("open saved archive"));
    let mut owners = Vec::new();
    for entry in outer.entries().expect("read saved archive") {
        let mut entry = entry.expect("saved entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        if !path.starts_with("blobs/sha256/") {
            continue;
        }
        let mut blob = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut blob).expect("read blob");
        if !blob.starts_with(&[0x1f, 0x8b]) {
            continue; // configs and manifests
        }
        let mut layer = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        for e in layer.entries().expect("layer entries") {
            let e = e.expect("layer entry");
            let h = e.header();
            owners.push((
                e.path().expect("path").to_string_lossy().into_owned(),
                h.uid().expect("uid"),
                h.gid().expect("gid"),
            ));
        }
    }
    owners
}

#[test]
fn a_killed_rootless_build_leaves_no_mount_that_blocks_the_next_command() {
    let home = RootlessHome::new();
    home.import_base();
    let ctx = home.context("ctx", "FROM base:1\nRUN touch /started && sleep 60\n");
    let mut build = common::KillOnDrop(
        home.command(&ctx, &["build", "-t", "k:1", "."])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the build"),
    );
    // The RUN step's FUSE mount is served by the rbuild process itself.
    let mounted = common::poll_until(1000, || !mounts_below(home.path()).is_empty());
    assert!(mounted, "the build never mounted its rootfs");
    build.0.kill().expect("kill -9 the build");
    build.0.wait().expect("reap the build");
    assert!(
        !mounts_below(home.path()).is_empty(),
        "the killed build's FUSE mount should still be there (dead) for the next command"
    );

    // umount2 is refused to a non-root user: the next command detaches the dead mount through
    // fusermount3 and builds.
    write_owned(
        &ctx.join("Dockerfile"),
        "FROM base:1\nRUN echo again > /a\n",
    );
    home.ok(&ctx, &["build", "-t", "k:1", "."]);
    let out = home.ok(home.path(), &["run", "--rm", "k:1", "cat", "/a"]);
    assert_eq!(stdout(&out), "again\n");
    let left = mounts_below(home.path());
    assert!(left.is_empty(), "mounts left behind: {left:?}");
    home.ok(home.path(), &["system", "check"]);
}

#[test]
fn resource_limits_without_a_delegated_cgroup_fail_naming_the_reason() {
    let home = RootlessHome::new();
    home.import_base();
    // This host delegates no cgroup to nobody: the limit cannot be enforced, and running
    // without it would silently ignore it.
    let args = [
        "run",
        "--rm",
        "--memory",
        "64m",
        "--pids-limit",
        "20",
        "base:1",
        "true",
    ];
    let out = home.rbuild(home.path(), &args);
    assert!(!out.status.success(), "{}", describe(&args, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot enforce --memory, --pids-limit: without root")
            && err.contains("cgroup delegated to your user"),
        "{err}"
    );
    // Nothing is left: no container, no mount.
    let out = home.ok(home.path(), &["ps", "-a", "-q"]);
    assert_eq!(stdout(&out), "");
    let left = mounts_below(home.path());
    assert!(left.is_empty(), "mounts left behind: {left:?}");
    // Without limits the same run works.
    home.ok(home.path(), &["run", "--rm", "base:1", "true"]);
}

/// A tar of a tree no non-root user can make: a directory, a file and a symlink owned by uid
/// 1000, a setuid file, a setgid file of group 50, a character device, a block device, a fifo,
/// read-only directories with contents and a file with a capability.
fn foreign_tar(path: &Path) {
    let mut tar = tar::Builder::new(fs::File::create(path).expect("create tar"));
    let mut add = |name: &str, kind: tar::EntryType, owner: u64, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_uid(owner);
        h.set_gid(if mode & 0o2000 != 0 { 50 } else { owner });
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        if kind == tar::EntryType::Symlink {
            h.set_link_name("u1000").expect("link name");
        }
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(1).expect("major");
            h.set_device_minor(3).expect("minor");
        }
        tar.append_data(&mut h, name, data).expect("append");
    };
    add("src/", tar::EntryType::Directory, 1000, 0o755, b"");
    add("src/u1000", tar::EntryType::Regular, 1000, 0o644, b"u\n");
    add("src/suid", tar::EntryType::Regular, 0, 0o4755, b"s\n");
    add("src/sgid", tar::EntryType::Regular, 1000, 0o2755, b"g\n");
    add("src/link", tar::EntryType::Symlink, 1000, 0o777, b"");
    add("src/null", tar::EntryType::Char, 0, 0o666, b"");
    add("src/blk", tar::EntryType::Block, 0, 0o660, b"");
    add("src/fifo", tar::EntryType::Fifo, 0, 0o644, b"");
    // Read-only directories with contents (Fedora's /usr/lib is 0555).
    add("ro/", tar::EntryType::Directory, 0, 0o555, b"");
    add("ro/sub/", tar::EntryType::Directory, 0, 0o500, b"");
    add("ro/sub/f", tar::EntryType::Regular, 0, 0o644, b"f\n");
    // A file capability (cap_net_raw, as ping has), in a PAX record before its file.
    let mut cap = Vec::new();
    for word in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
        cap.extend_from_slice(&word.to_le_bytes());
    }
    add(
        "src/PaxHeaders/ping",
        tar::EntryType::XHeader,
        0,
        0o644,
        &pax_record("SCHILY.xattr.security.capability", &cap),
    );
    add("src/ping", tar::EntryType::Regular, 0, 0o755, b"p\n");
    tar.finish().expect("finish tar");
}

/// One PAX extended header record: "LEN KEY=VALUE\n", LEN counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

#[test]
fn images_with_other_owners_and_device_nodes_are_pulled_built_on_and_pushed() {
    let registry = TestRegistry::start();
    let home = RootlessHome::new();
    home.import_base();
    let archive = home.path().join("foreign.tar");
    foreign_tar(&archive);
    chown(&archive, Some(NOBODY), Some(NOBODY)).expect("chown tar");

    // Root makes and pushes an image of that tree: its layer keeps the owners and devices.
    let origin = TestRoot::new();
    let foreign = format!("{}/t/foreign:1", registry.host());
    let root_args = ["--root", &origin.root_str()];
    let out = common::rbuild(
        &[
            &root_args[..],
            &["import", archive.to_str().unwrap(), &foreign],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", describe(&["import"], &out));
    origin.ok(&["push", "-q", &foreign]);

    // Pulled without root: owners cannot be kept (the files are the user's, so root's in the
    // image) and device nodes cannot be made; they are skipped with a notice, as podman does.
    let out = home.ok(home.path(), &["pull", &foreign]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notice: device nodes are skipped without root")
            && (err.contains("src/null") || err.contains("src/blk"))
            && err.contains("notice: extended attributes only root may set")
            && err.contains("security.capability of src/ping"),
        "{err}"
    );
    let out = home.ok(home.path(), &["mount", &foreign]);
    let merged = PathBuf::from(stdout(&out).trim());
    let listing = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .args(["stat", "-c", "%n %u %a %F"])
        .args(
            [
                "src/u1000",
                "src/suid",
                "src/sgid",
                "src/fifo",
                "src/ping",
                "ro",
                "ro/sub",
                "ro/sub/f",
            ]
            .map(|n| merged.join(n)),
        )
        .output()
        .expect("stat the mounted image");
    let listing = stdout(&listing).replace(&format!("{}/", merged.display()), "");
    assert_eq!(
        listing,
        format!(
            "src/u1000 {NOBODY} 644 regular file\nsrc/suid {NOBODY} 4755 regular file\n\
             src/sgid {NOBODY} 2755 regular file\nsrc/fifo {NOBODY} 644 fifo\n\
             src/ping {NOBODY} 755 regular file\nro {NOBODY} 555 directory\n\
             ro/sub {NOBODY} 500 directory\nro/sub/f {NOBODY} 644 regular file\n"
        )
    );
    home.ok(home.path(), &["umount", &foreign]);
    assert!(mounts_below(home.path()).is_empty());

    // A multi-stage build on it: COPY --from of the foreign files, ADD of the local tar,
    // WORKDIR, a RUN that makes, chmods, deletes and moves files, also in read-only
    // directories (root may; the FUSE server, running as the user, makes them writable for
    // the instant).
    let ctx = home.context(
        "ctx",
        &format!(
            "FROM {foreign} AS src\n\
             FROM base:1\n\
             WORKDIR /app\n\
             COPY --from=src /src ./\n\
             COPY --from=src /ro /ro\n\
             ADD foreign.tar /x/\n\
             RUN pwd > /pwd && echo made > made && chmod 4750 made && rm /bin/vi \
             && touch /ro/new && rm /ro/sub/f && mv /ro/new /ro/sub/moved \
             && mkdir -m 555 /own && touch /own/in\n"
        ),
    );
    fs::copy(&archive, ctx.join("foreign.tar")).expect("copy tar");
    chown(ctx.join("foreign.tar"), Some(NOBODY), Some(NOBODY)).expect("chown tar");
    home.ok(&ctx, &["build", "-t", "ms:1", "."]);
    let check = |image: &str| {
        let out = home.ok(
            home.path(),
            &[
                "run",
                "--rm",
                image,
                "sh",
                "-c",
                "cat /pwd; stat -c '%n %u:%g %a' u1000 suid sgid link made /x/src/u1000 \
                 /x/src/suid /ro /ro/sub /own /x/ro /x/ro/sub; ls /ro/sub; ls /own; \
                 cat /x/ro/sub/f; \
                 ls /x/src/null /x/src/blk /bin/vi 2>&1 | wc -l",
            ],
        );
        assert_eq!(
            stdout(&out),
            "/app\nu1000 0:0 644\nsuid 0:0 4755\nsgid 0:0 2755\nlink 0:0 777\nmade 0:0 4750\n\
             /x/src/u1000 0:0 644\n/x/src/suid 0:0 4755\n/ro 0:0 755\n/ro/sub 0:0 500\n\
             /own 0:0 555\n/x/ro 0:0 555\n/x/ro/sub 0:0 500\nmoved\nin\nf\n3\n",
            "{image}"
        );
    };
    check("ms:1");

    // Pushed without root, then pulled back into an emptied store.
    let pushed = format!("{}/t/ms:1", registry.host());
    home.ok(home.path(), &["tag", "ms:1", &pushed]);
    home.ok(home.path(), &["push", &pushed]);
    home.ok(home.path(), &["rmi", "ms:1", &pushed, &foreign]);
    home.ok(home.path(), &["system", "prune", "-f"]);
    home.ok(home.path(), &["pull", &pushed]);
    check(&pushed);
    assert!(mounts_below(home.path()).is_empty());
}

#[test]
fn containers_are_logged_stopped_committed_saved_loaded_and_pruned_without_root() {
    let home = RootlessHome::new();
    home.import_base();
    let h = home.path();
    home.ok(
        h,
        &[
            "run",
            "-d",
            "--name",
            "c1",
            "base:1",
            "sh",
            "-c",
            "trap 'exit 0' TERM; mkdir /w && echo data > /w/f && chmod 4711 /w/f && \
             rm /bin/vi && echo out && echo err >&2; sleep 1000 & wait",
        ],
    );
    let logged = common::poll_until(500, || {
        stdout(&home.ok(h, &["logs", "c1"])).contains("out\nerr\n")
    });
    assert!(logged, "{}", stdout(&home.ok(h, &["logs", "c1"])));
    // Without a cgroup, top lists the container's process tree and stats says it has no
    // figures (rather than zeros).
    let listed = common::poll_until(500, || {
        let top = stdout(&home.ok(h, &["top", "c1"]));
        top.contains("sh -c trap") && top.contains("sleep 1000")
    });
    assert!(listed, "{}", stdout(&home.ok(h, &["top", "c1"])));
    let out = home.ok(h, &["stats", "--no-stream", "c1"]);
    assert!(
        stdout(&out).contains("c1                  --        -- / --"),
        "{}",
        stdout(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container c1 has no cgroup"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    home.ok(h, &["stop", "c1"]);
    // The SIGTERM reached the container's shell (its trap exits 0).
    let out = home.ok(h, &["ps", "-a"]);
    assert!(stdout(&out).contains("Exited (0)"), "{}", stdout(&out));

    // The container's changes become an image: mode bits kept, files root's, deletion kept.
    home.ok(h, &["commit", "c1", "com:1"]);
    let check = |image: &str| {
        let out = home.ok(
            h,
            &[
                "run",
                "--rm",
                image,
                "sh",
                "-c",
                "stat -c '%n %u:%g %a' /w/f; ls /bin/vi 2>&1 | wc -l",
            ],
        );
        assert_eq!(stdout(&out), "/w/f 0:0 4711\n1\n", "{image}");
    };
    check("com:1");
    let archive = h.join("com.tar");
    home.ok(h, &["save", "-o", archive.to_str().unwrap(), "com:1"]);
    home.ok(h, &["rm", "c1"]);
    home.ok(h, &["rmi", "com:1"]);
    home.ok(h, &["system", "prune", "-f"]);
    home.ok(h, &["load", "-i", archive.to_str().unwrap()]);
    check("com:1");
    home.ok(h, &["system", "check"]);
    assert_eq!(stdout(&home.ok(h, &["ps", "-a", "-q"])), "");
    let left = mounts_below(h);
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}

#[test]
fn files_their_owner_may_not_read_are_read_and_snapshotted() {
    let home = RootlessHome::new();
    home.import_base();
    // Root reads and writes files whatever their mode; so do the container's root (through
    // the FUSE server, which runs as the user) and the rootless snapshot.
    let ctx = home.context(
        "ctx",
        "FROM base:1\nRUN echo s > /x && chmod 000 /x && cat /x && echo t > /y && chmod 4000 /y \
         && echo r > /r && chmod 444 /r && cat /r\n",
    );
    home.ok(&ctx, &["build", "-t", "m:1", "."]);
    let out = home.ok(
        home.path(),
        &[
            "run",
            "--rm",
            "m:1",
            "sh",
            "-c",
            "stat -c '%n %a %s' /x /y /r; echo more >> /x; cat /x /y /r",
        ],
    );
    assert_eq!(stdout(&out), "/x 0 2\n/y 4000 2\n/r 444 2\ns\nmore\nt\nr\n");

    // A directory its owner cannot list cannot be snapshotted without root: the error says so.
    write_owned(
        &ctx.join("Dockerfile"),
        "FROM base:1\nRUN mkdir /d && echo t > /d/y && chmod 000 /d\n",
    );
    let args = ["build", "-t", "m:2", "."];
    let out = home.rbuild(&ctx, &args);
    assert!(!out.status.success(), "{}", describe(&args, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "upper/d: without root, a directory whose mode (000) denies its owner reading"
        ),
        "{err}"
    );
    let left = mounts_below(home.path());
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}

#[test]
fn build_output_exports_read_only_dirs_and_unreadable_files_without_root() {
    let home = RootlessHome::new();
    home.import_base();
    // Two layers below the exported tree: the export reads it through a union mount.
    let ctx = home.context(
        "ctx-output",
        "FROM base:1\nRUN mkdir -p /o/ro/sub && echo f > /o/ro/sub/f && chmod 555 /o/ro/sub /o/ro\n\
         RUN echo s > /o/shadow && chmod 000 /o/shadow\n",
    );
    let dest = home.path().join("out");
    let tar = home.path().join("out.tar");
    home.ok(
        home.path(),
        &[
            "build",
            "-q",
            "-o",
            dest.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
    );
    let mode = |rel: &str| fs::symlink_metadata(dest.join(rel)).unwrap().mode() & 0o7777;
    assert_eq!(
        (mode("o/ro"), mode("o/ro/sub"), mode("o/shadow")),
        (0o555, 0o555, 0)
    );
    assert_eq!(fs::read_to_string(dest.join("o/ro/sub/f")).unwrap(), "f\n");
    assert_eq!(fs::read_to_string(dest.join("o/shadow")).unwrap(), "s\n");
    let dest_tar = format!("type=tar,dest={}", tar.display());
    home.ok(
        home.path(),
        &["build", "-q", "-o", &dest_tar, ctx.to_str().unwrap()],
    );
    let mut archive = tar::Archive::new(fs::File::open(&tar).unwrap());
    let mut shadow = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("o/shadow") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            shadow = Some((entry.header().mode().unwrap() & 0o7777, text));
        }
    }
    assert_eq!(shadow, Some((0, "s\n".to_string())));
}

#[test]
fn builder_prune_all_removes_cache_mounts_with_read_only_dirs_without_root() {
    let home = RootlessHome::new();
    home.import_base();
    // As Go's module cache (`go mod download` leaves its dirs 0555) in a cache mount.
    let ctx = home.context(
        "ctx-prune",
        "FROM base:1\nRUN --mount=type=cache,target=/go/pkg/mod mkdir -p /go/pkg/mod/m@v1/sub \
         && touch /go/pkg/mod/m@v1/sub/f && chmod 555 /go/pkg/mod/m@v1/sub /go/pkg/mod/m@v1\n",
    );
    home.ok(home.path(), &["build", "-q", ctx.to_str().unwrap()]);
    let mounts = home.path().join(".local/share/rbuild/cache/run-mounts");
    assert_eq!(fs::read_dir(&mounts).unwrap().count(), 1);
    home.ok(home.path(), &["builder", "prune", "--all", "--force"]);
    assert_eq!(fs::read_dir(&mounts).map_or(0, |d| d.count()), 0);
}

#[test]
fn run_mount_binds_a_context_with_read_only_dirs_without_root() {
    let home = RootlessHome::new();
    home.import_base();
    let ctx = home.context(
        "ctx-bind",
        "FROM base:1\nRUN --mount=type=bind,source=src,target=/s cat /s/ro/f && stat -c %a /s/ro\n",
    );
    fs::create_dir_all(ctx.join("src/ro")).unwrap();
    write_owned(&ctx.join("src/ro/f"), "in a read-only dir\n");
    for d in ["src", "src/ro"] {
        chown(ctx.join(d), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    fs::set_permissions(ctx.join("src/ro"), fs::Permissions::from_mode(0o555)).unwrap();
    let out = home.ok(
        home.path(),
        &["build", "--progress", "plain", ctx.to_str().unwrap()],
    );
    let text = stdout(&out);
    assert!(
        text.contains("in a read-only dir\n555\n"),
        "{}",
        describe(&["build"], &out)
    );
}
