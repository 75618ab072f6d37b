//! `rbuild pull/push/login/logout` against Debian's reference registry, and interop with
//! skopeo and umoci.

mod common;
#[path = "common/registry.rs"]
mod registry_server;

use common::{busybox_rootfs, describe, rbuild_bin, TestRoot};
use registry_server::TestRegistry;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs rbuild with a store root and an isolated Docker config dir.
fn rb(root: &TestRoot, docker_config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(rbuild_bin());
    cmd.env("DOCKER_CONFIG", docker_config)
        .env("RBUILD_CONFIG", docker_config.join("no-rbuild-config.json"));
    rb_cmd(cmd, root, args, stdin)
}

/// Runs `cmd` (rbuild, with its environment set) with a store root, `args` and `stdin`.
fn rb_cmd(mut cmd: Command, root: &TestRoot, args: &[&str], stdin: Option<&str>) -> Output {
    cmd.arg("--root")
        .arg(root.path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn rbuild");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait rbuild")
}

fn ok(root: &TestRoot, dc: &Path, args: &[&str]) -> String {
    let out = rb(root, dc, args, None);
    assert!(out.status.success(), "{}", describe(args, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Files of every unpacked layer in a store, found by relative path.
fn find_in_layers(root: &Path, rel: &str) -> Option<Vec<u8>> {
    std::fs::read_dir(root.join("layers"))
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| std::fs::read(e.path().join(rel)).ok())
}

#[test]
fn push_pull_round_trip_read_by_skopeo_and_umoci() {
    let registry = TestRegistry::start();
    let dc = tempfile::tempdir().unwrap();
    let src = TestRoot::new();
    let name = format!("{}/demo/bb:1", registry.host());
    let id = src.import_busybox(&name);
    let out = ok(&src, dc.path(), &["push", &name]);
    let digest = out
        .split("digest: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("digest line")
        .to_string();
    // skopeo reads what rbuild pushed.
    let inspect = run_ok(
        "skopeo",
        &["inspect", "--tls-verify=false", &format!("docker://{name}")],
    );
    let doc: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(doc["Digest"], digest.as_str());
    // skopeo copies it to an OCI layout; umoci unpacks the same files.
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    run_ok(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{name}"),
            &format!("oci:{}:bb", layout.display()),
        ],
    );
    let bundle = work.path().join("bundle");
    run_ok(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:bb", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(bundle.join("rootfs/bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    assert!(std::fs::read_to_string(bundle.join("rootfs/etc/passwd"))
        .unwrap()
        .starts_with("root:x:0:0"));
    // rbuild pulls it back into a fresh store: same image ID, same files.
    let dst = TestRoot::new();
    let out = ok(&dst, dc.path(), &["pull", "-q", &name]);
    assert_eq!(out.trim(), name);
    let pulled_id = ok(&dst, dc.path(), &["inspect", "-f", "{{.Id}}", &name]);
    assert_eq!(pulled_id.trim(), id.trim());
    assert_eq!(
        find_in_layers(dst.path(), "bin/busybox").unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    // Pushing again skips every blob.
    let again = rb(&src, dc.path(), &["push", &name], None);
    assert!(again.status.success(), "{}", describe(&["push"], &again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("Layer already exists"));
}

#[test]
fn an_image_skopeo_copied_from_an_oci_layout_is_pulled_and_run() {
    let registry = TestRegistry::start();
    let dc = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // An OCI layout made by umoci (no rbuild involved), copied into the registry by skopeo.
    let layout = work.path().join("layout");
    let layout_s = layout.to_str().unwrap();
    run_ok("umoci", &["init", "--layout", layout_s]);
    run_ok("umoci", &["new", "--image", &format!("{layout_s}:t")]);
    let bundle = work.path().join("bundle");
    run_ok(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{layout_s}:t"),
            bundle.to_str().unwrap(),
        ],
    );
    busybox_rootfs(&bundle.join("rootfs"));
    std::fs::write(bundle.join("rootfs/etc/motd"), "made by umoci\n").unwrap();
    run_ok(
        "umoci",
        &[
            "repack",
            "--image",
            &format!("{layout_s}:t"),
            bundle.to_str().unwrap(),
        ],
    );
    run_ok(
        "umoci",
        &[
            "config",
            "--image",
            &format!("{layout_s}:t"),
            "--config.cmd",
            "cat",
            "--config.cmd",
            "/etc/motd",
        ],
    );
    let name = format!("{}/umoci/img:t", registry.host());
    run_ok(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{layout_s}:t"),
            &format!("docker://{name}"),
        ],
    );
    let dst = TestRoot::new();
    ok(&dst, dc.path(), &["pull", &name]);
    assert_eq!(
        find_in_layers(dst.path(), "etc/motd").unwrap(),
        b"made by umoci\n"
    );
    let cmd = ok(
        &dst,
        dc.path(),
        &["inspect", "-f", "{{json .Config.Cmd}}", &name],
    );
    assert_eq!(cmd.trim(), r#"["cat","/etc/motd"]"#);
    // And it runs: the image's CMD prints the file.
    let out = ok(&dst, dc.path(), &["run", "--rm", &name]);
    assert_eq!(out, "made by umoci\n");
}

#[test]
fn login_logout_against_a_basic_auth_registry() {
    let registry = TestRegistry::start_with_auth("alice", "wonderland");
    let dc = tempfile::tempdir().unwrap();
    let src = TestRoot::new();
    let name = format!("{}/private/bb:1", registry.host());
    src.import_busybox(&name);
    let denied = rb(&src, dc.path(), &["push", &name], None);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("rbuild login"),
        "{}",
        describe(&["push"], &denied)
    );
    let bad = rb(
        &src,
        dc.path(),
        &["login", "-u", "alice", "--password-stdin", registry.host()],
        Some("nope\n"),
    );
    assert!(!bad.status.success(), "{}", describe(&["login"], &bad));
    assert!(
        !dc.path().join("config.json").exists(),
        "a refused login saves nothing"
    );
    let good = rb(
        &src,
        dc.path(),
        &["login", "-u", "alice", "--password-stdin", registry.host()],
        Some("wonderland\n"),
    );
    assert!(good.status.success(), "{}", describe(&["login"], &good));
    assert!(String::from_utf8_lossy(&good.stdout).contains("Login Succeeded"));
    let config = std::fs::read_to_string(dc.path().join("config.json")).unwrap();
    assert!(config.contains(registry.host()));
    ok(&src, dc.path(), &["push", "-q", &name]);
    let dst = TestRoot::new();
    ok(&dst, dc.path(), &["pull", "-q", &name]);
    ok(&src, dc.path(), &["logout", registry.host()]);
    let other = TestRoot::new();
    assert!(!rb(&other, dc.path(), &["pull", "-q", &name], None)
        .status
        .success());
}

#[test]
fn push_again_after_kill_9_in_the_middle() {
    let registry = TestRegistry::start();
    let dc = tempfile::tempdir().unwrap();
    let src = TestRoot::new();
    let rootfs = tempfile::tempdir().unwrap();
    busybox_rootfs(rootfs.path());
    // 32 MiB of incompressible data in an uncompressed layer (cheap to make in a debug build)
    // makes the push last long enough to be interrupted.
    let mut f = std::fs::File::create(rootfs.path().join("big.bin")).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..32 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 32) as u8;
        }
        f.write_all(&buf).unwrap();
    }
    drop(f);
    let name = format!("{}/big/img:1", registry.host());
    src.ok(&[
        "import",
        "--compression",
        "none",
        rootfs.path().to_str().unwrap(),
        &name,
    ]);
    let mut child = Command::new(rbuild_bin())
        .arg("--root")
        .arg(src.path())
        .args(["push", &name])
        .env("DOCKER_CONFIG", dc.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it as soon as a blob upload has started.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.map(|l| l.contains("Pushing")).unwrap_or(true) {
            break;
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    ok(&src, dc.path(), &["push", &name]);
    let dst = TestRoot::new();
    ok(&dst, dc.path(), &["pull", "-q", &name]);
    assert_eq!(
        find_in_layers(dst.path(), "big.bin").map(|b| b.len()),
        Some(32 << 20)
    );
}

#[test]
fn credential_helper_is_used_for_get_store_and_erase() {
    credential_helper_round_trip(&|host| format!(r#"{{"credHelpers":{{"{host}":"rbtest"}}}}"#));
}

#[test]
fn credentials_store_helper_is_used_for_get_store_and_erase() {
    // `credsStore`: one helper for every registry (what Docker Desktop and pass set up).
    credential_helper_round_trip(&|_| r#"{"credsStore":"rbtest"}"#.to_string());
}

/// Push, login and logout with a config.json (made by `config` from the registry host) that
/// sends rbuild to the helper docker-credential-rbtest; checks the helper got get, store and
/// erase, and that the file holds no secret.
fn credential_helper_round_trip(config: &dyn Fn(&str) -> String) {
    use std::os::unix::fs::PermissionsExt;
    let registry = TestRegistry::start_with_auth("alice", "wonderland");
    let dc = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let log = bin.path().join("helper.log");
    let helper = bin.path().join("docker-credential-rbtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\ninput=$(cat)\necho \"$1 $input\" >> {log}\ncase $1 in\n  get) echo '{{\"ServerURL\":\"x\",\"Username\":\"alice\",\"Secret\":\"wonderland\"}}' ;;\nesac\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dc.path().join("config.json"), config(registry.host())).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let src = TestRoot::new();
    let name = format!("{}/helped/bb:1", registry.host());
    src.import_busybox(&name);
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(rbuild_bin());
        cmd.arg("--root")
            .arg(src.path())
            .args(args)
            .env("DOCKER_CONFIG", dc.path())
            .env("PATH", &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", describe(args, &out));
    };
    run(&["push", "-q", &name], None);
    run(
        &["login", "-u", "alice", "--password-stdin", registry.host()],
        Some("wonderland\n"),
    );
    run(&["logout", registry.host()], None);
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.lines().any(|l| l.starts_with("get ")), "{calls}");
    assert!(
        calls
            .lines()
            .any(|l| l.starts_with("store ") && l.contains("wonderland")),
        "{calls}"
    );
    assert!(
        calls
            .lines()
            .any(|l| l.starts_with(&format!("erase {}", registry.host()))),
        "{calls}"
    );
    let config = std::fs::read_to_string(dc.path().join("config.json")).unwrap();
    assert!(
        !config.contains("wonderland"),
        "the helper, not the file, holds the secret"
    );
}

#[test]
fn only_loopback_registries_get_plain_http_without_a_flag() {
    // A plain-HTTP registry on a non-loopback address of this machine: HTTPS by default.
    let registry = TestRegistry::start_on(&common::non_loopback_ipv4());
    let dc = tempfile::tempdir().unwrap();
    let src = TestRoot::new();
    let name = format!("{}/plain/bb:1", registry.host());
    let id = src.import_busybox(&name);
    let refused = rb(&src, dc.path(), &["push", &name], None);
    assert!(
        !refused.status.success(),
        "{}",
        describe(&["push"], &refused)
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!("https://{}/v2/", registry.host()))
            && err.contains("--tls-verify=false")
            && err.contains("insecure-registries"),
        "{err}"
    );
    // --tls-verify=false: HTTPS without verification, falling back to plain HTTP.
    ok(
        &src,
        dc.path(),
        &["push", "-q", "--tls-verify=false", &name],
    );
    let dst = TestRoot::new();
    let refused = rb(&dst, dc.path(), &["pull", "-q", &name], None);
    assert!(
        !refused.status.success(),
        "{}",
        describe(&["pull"], &refused)
    );
    // Listed in insecure-registries of rbuild's config file ($RBUILD_CONFIG): no flag needed.
    let config = dc.path().join("rbuild-config.json");
    std::fs::write(
        &config,
        format!(r#"{{"insecure-registries": ["{}"]}}"#, registry.host()),
    )
    .unwrap();
    let mut cmd = Command::new(rbuild_bin());
    cmd.env("DOCKER_CONFIG", dc.path())
        .env("RBUILD_CONFIG", &config);
    let out = rb_cmd(cmd, &dst, &["pull", "-q", &name], None);
    assert!(out.status.success(), "{}", describe(&["pull"], &out));
    let pulled = ok(&dst, dc.path(), &["inspect", "-f", "{{.Id}}", &name]);
    assert_eq!(pulled.trim(), id.trim());

    // Loopback: 127.0.0.0/8 beyond 127.0.0.1, and `localhost`, are plain HTTP with no flag.
    let lo2 = TestRegistry::start_on("127.0.0.2");
    let local = TestRegistry::start();
    let port = local.host().rsplit(':').next().unwrap().to_string();
    for name in [
        format!("{}/lo/bb:1", lo2.host()),
        format!("localhost:{port}/lo/bb:1"),
    ] {
        src.ok(&["tag", id.trim(), &name]);
        ok(&src, dc.path(), &["push", "-q", &name]);
        let dst = TestRoot::new();
        ok(&dst, dc.path(), &["pull", "-q", &name]);
        let pulled = ok(&dst, dc.path(), &["inspect", "-f", "{{.Id}}", &name]);
        assert_eq!(pulled.trim(), id.trim(), "{name}");
    }
}

#[test]
fn without_docker_config_credentials_live_in_home_docker_config_json() {
    let registry = TestRegistry::start_with_auth("alice", "wonderland");
    let home = tempfile::tempdir().unwrap();
    let src = TestRoot::new();
    let name = format!("{}/private/bb:1", registry.host());
    src.import_busybox(&name);
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(rbuild_bin());
        cmd.env_remove("DOCKER_CONFIG")
            .env("HOME", home.path())
            .env("RBUILD_CONFIG", home.path().join("no-rbuild-config.json"));
        rb_cmd(cmd, &src, args, stdin)
    };
    let login = run(
        &["login", "-u", "alice", "--password-stdin", registry.host()],
        Some("wonderland\n"),
    );
    assert!(login.status.success(), "{}", describe(&["login"], &login));
    let file = home.path().join(".docker/config.json");
    let config = std::fs::read_to_string(&file).expect("~/.docker/config.json written");
    assert!(config.contains(registry.host()), "{config}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let push = run(&["push", "-q", &name], None);
    assert!(push.status.success(), "{}", describe(&["push"], &push));
    let logout = run(&["logout", registry.host()], None);
    assert!(
        logout.status.success(),
        "{}",
        describe(&["logout"], &logout)
    );
    let config = std::fs::read_to_string(&file).unwrap();
    assert!(!config.contains(registry.host()), "{config}");
    let denied = run(&["push", "-q", &name], None);
    assert!(!denied.status.success(), "{}", describe(&["push"], &denied));
}

#[test]
fn progress_is_bars_on_a_terminal_and_plain_lines_otherwise() {
    use std::io::Read;
    let registry = TestRegistry::start();
    let dc = tempfile::tempdir().unwrap();
    let src = TestRoot::new();
    let name = format!("{}/progress/bb:1", registry.host());
    src.import_busybox(&name);
    ok(&src, dc.path(), &["push", "-q", &name]);

    // Not a terminal: one plain line per event, no escape sequences.
    let dst = TestRoot::new();
    let out = rb(&dst, dc.path(), &["pull", &name], None);
    assert!(out.status.success(), "{}", describe(&["pull"], &out));
    let plain = String::from_utf8_lossy(&out.stderr);
    assert!(plain.contains(": Downloading ("), "{plain}");
    assert!(plain.contains(": Pull complete"), "{plain}");
    assert!(!plain.contains('\x1b'), "{plain:?}");

    // Standard error on a terminal: a live bar per layer.
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let dst = TestRoot::new();
    let mut cmd = Command::new(rbuild_bin());
    cmd.arg("--root")
        .arg(dst.path())
        .args(["pull", &name])
        .env("DOCKER_CONFIG", dc.path())
        .env("RBUILD_CONFIG", dc.path().join("no-rbuild-config.json"))
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(pty.slave));
    let child = cmd.spawn().expect("spawn rbuild");
    drop(cmd); // the parent's copy of the terminal's slave side
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // Reads end with EIO once every slave descriptor is closed (the child exited).
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let out = child.wait_with_output().expect("wait rbuild");
    let term = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(out.status.success(), "{term}");
    assert!(term.contains("Downloading ["), "{term:?}");
    // Every frame is complete: none shows a bar before its verb was set.
    assert!(!term.contains(":  ["), "{term:?}");
    assert!(term.contains("\x1b["), "{term:?}");
    assert!(term.contains(": Pull complete"), "{term:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
}

/// Whether two files have the same bytes (read 1 MiB at a time).
fn same_contents(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut a, mut b) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
    }
}

#[test]
fn pull_streams_a_big_layer_without_holding_it_in_memory() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    const LAYER: u64 = 128 << 20;
    let registry = TestRegistry::start();
    let dc = tempfile::tempdir().unwrap();
    let src = TestRoot::new();
    let dir = tempfile::tempdir().unwrap();
    // Streamed to the file: this process must stay small, as Linux carries the peak RSS of the
    // process that spawns a child over into the child's ru_maxrss.
    let source = dir.path().join("big.bin");
    let copied = std::io::copy(
        &mut std::fs::File::open("/dev/urandom").unwrap().take(LAYER),
        &mut std::fs::File::create(&source).unwrap(),
    )
    .unwrap();
    assert_eq!(copied, LAYER);
    let name = format!("{}/big/stream:1", registry.host());
    // Uncompressed, so the blob itself is 128 MiB too.
    src.ok(&[
        "import",
        "--compression",
        "none",
        dir.path().to_str().unwrap(),
        &name,
    ]);
    ok(&src, dc.path(), &["push", "-q", &name]);

    let dst = TestRoot::new();
    // Reaped below by wait4, which also returns its resource usage.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(rbuild_bin())
        .arg("--root")
        .arg(dst.path())
        .args(["pull", "-q", &name])
        .env("DOCKER_CONFIG", dc.path())
        .env("RBUILD_CONFIG", dc.path().join("no-rbuild-config.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid pointers to the status and usage out-values.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let status = std::process::ExitStatus::from_raw(status);
    assert!(status.success(), "pull failed: {status}");
    let peak = usage.ru_maxrss as u64 * 1024;
    eprintln!("peak RSS of the pull: {} MiB", peak >> 20);
    assert!(
        peak < LAYER / 2,
        "peak RSS of the pull was {} MiB for a {} MiB layer",
        peak >> 20,
        LAYER >> 20
    );
    let layers = std::fs::read_dir(dst.path().join("layers")).unwrap();
    let unpacked = layers
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("big.bin"))
        .find(|p| p.exists())
        .expect("big.bin unpacked");
    assert!(
        same_contents(&unpacked, &source),
        "big.bin differs after the pull"
    );
}

#[test]
fn push_format_docker_writes_a_v2s2_manifest_that_skopeo_reads() {
    let registry = TestRegistry::start();
    let dc = tempfile::tempdir().unwrap();
    let src = TestRoot::new();
    let name = format!("{}/fmt/bb:1", registry.host());
    let id = src.import_busybox(&name);
    let digest = ok(
        &src,
        dc.path(),
        &["push", "-q", "--format", "docker", &name],
    );
    let raw = run_ok(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{name}"),
        ],
    );
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(manifest["config"]["digest"], id.trim());
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }
    let inspect = run_ok(
        "skopeo",
        &["inspect", "--tls-verify=false", &format!("docker://{name}")],
    );
    let doc: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(doc["Digest"], digest.trim());
    // Pushed again as OCI: another manifest document for the same config.
    let oci = ok(&src, dc.path(), &["push", "-q", "--format", "oci", &name]);
    assert_ne!(oci.trim(), digest.trim());
    let raw = run_ok(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{name}"),
        ],
    );
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(manifest["config"]["digest"], id.trim());
}

#[test]
fn login_on_a_terminal_prompts_and_hides_the_password() {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let registry = TestRegistry::start_with_auth("alice", "wonderland");
    let dc = tempfile::tempdir().unwrap();
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    let mut cmd = Command::new(rbuild_bin());
    cmd.args(["login", registry.host()])
        .env("DOCKER_CONFIG", dc.path())
        .env("RBUILD_CONFIG", dc.path().join("no-rbuild-config.json"))
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave));
    let child = cmd.spawn().expect("spawn rbuild login");
    drop(cmd); // the parent's copies of the terminal's slave side
    let mut master = std::fs::File::from(pty.master);
    let mut input = master.try_clone().unwrap();
    let screen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let screen = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            // Reads end with EIO once every slave descriptor is closed (the child exited).
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let wait_for = |text: &str| {
        let shown = common::poll_until(1000, || {
            String::from_utf8_lossy(&screen.lock().unwrap()).contains(text)
        });
        assert!(
            shown,
            "no {text:?} on the terminal: {:?}",
            String::from_utf8_lossy(&screen.lock().unwrap())
        );
    };
    wait_for("Username: ");
    input.write_all(b"alice\n").unwrap();
    wait_for("Password: ");
    input.write_all(b"wonderland\n").unwrap();
    let out = child.wait_with_output().expect("wait rbuild login");
    reader.join().unwrap();
    let screen = String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    assert!(out.status.success(), "{screen}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"));
    assert!(
        screen.contains("alice"),
        "the user name is echoed: {screen:?}"
    );
    assert!(
        !screen.contains("wonderland"),
        "the password was echoed: {screen:?}"
    );
    let config = std::fs::read_to_string(dc.path().join("config.json")).unwrap();
    assert!(config.contains(registry.host()), "{config}");
}

#[test]
fn docker_hub_names_are_pulled_from_a_mirror_in_rbuild_config() {
    let mirror = TestRegistry::start();
    let dc = tempfile::tempdir().unwrap();
    let src = TestRoot::new();
    // What the mirror holds for docker.io/library/mirrored:1.
    let on_mirror = format!("{}/library/mirrored:1", mirror.host());
    let id = src.import_busybox(&on_mirror);
    ok(&src, dc.path(), &["push", "-q", &on_mirror]);
    let config = dc.path().join("rbuild-config.json");
    std::fs::write(
        &config,
        format!(r#"{{"registry-mirrors": ["{}"]}}"#, mirror.url()),
    )
    .unwrap();
    let dst = TestRoot::new();
    let mut cmd = Command::new(rbuild_bin());
    cmd.env("DOCKER_CONFIG", dc.path())
        .env("RBUILD_CONFIG", &config);
    let out = rb_cmd(cmd, &dst, &["pull", "mirrored:1"], None);
    assert!(out.status.success(), "{}", describe(&["pull"], &out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "docker.io/library/mirrored:1"
    );
    for name in ["mirrored:1", "docker.io/library/mirrored:1"] {
        let pulled = ok(&dst, dc.path(), &["inspect", "-f", "{{.Id}}", name]);
        assert_eq!(pulled.trim(), id.trim(), "{name}");
    }
    // Without $RBUILD_CONFIG the file is $XDG_CONFIG_HOME/rbuild/config.json.
    let xdg = tempfile::tempdir().unwrap();
    std::fs::create_dir(xdg.path().join("rbuild")).unwrap();
    std::fs::copy(&config, xdg.path().join("rbuild/config.json")).unwrap();
    let dst = TestRoot::new();
    let mut cmd = Command::new(rbuild_bin());
    cmd.env("DOCKER_CONFIG", dc.path())
        .env_remove("RBUILD_CONFIG")
        .env("XDG_CONFIG_HOME", xdg.path());
    let out = rb_cmd(cmd, &dst, &["pull", "-q", "mirrored:1"], None);
    assert!(out.status.success(), "{}", describe(&["pull"], &out));
    let pulled = ok(&dst, dc.path(), &["inspect", "-f", "{{.Id}}", "mirrored:1"]);
    assert_eq!(pulled.trim(), id.trim());
}

#[test]
fn a_self_signed_https_registry_needs_tls_verify_false_or_insecure_registries() {
    // HTTPS only (plain HTTP is refused), with a certificate nobody trusts, on a non-loopback
    // address: --tls-verify=false and insecure-registries must skip the verification, over HTTPS.
    let registry = TestRegistry::start_tls_on(&common::non_loopback_ipv4());
    let dc = tempfile::tempdir().unwrap();
    let src = TestRoot::new();
    let name = format!("{}/tls/bb:1", registry.host());
    let id = src.import_busybox(&name);
    let refused = rb(&src, dc.path(), &["push", "-q", &name], None);
    assert!(
        !refused.status.success(),
        "{}",
        describe(&["push"], &refused)
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("certificate") && err.contains("--tls-verify=false"),
        "{err}"
    );
    let digest = ok(
        &src,
        dc.path(),
        &["push", "-q", "--tls-verify=false", &name],
    );
    let inspect = run_ok(
        "skopeo",
        &["inspect", "--tls-verify=false", &format!("docker://{name}")],
    );
    let doc: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(doc["Digest"], digest.trim());
    let dst = TestRoot::new();
    let refused = rb(&dst, dc.path(), &["pull", "-q", &name], None);
    assert!(
        !refused.status.success(),
        "{}",
        describe(&["pull"], &refused)
    );
    let config = dc.path().join("rbuild-config.json");
    std::fs::write(
        &config,
        format!(r#"{{"insecure-registries": ["{}"]}}"#, registry.host()),
    )
    .unwrap();
    let mut cmd = Command::new(rbuild_bin());
    cmd.env("DOCKER_CONFIG", dc.path())
        .env("RBUILD_CONFIG", &config);
    let out = rb_cmd(cmd, &dst, &["pull", "-q", &name], None);
    assert!(out.status.success(), "{}", describe(&["pull"], &out));
    let pulled = ok(&dst, dc.path(), &["inspect", "-f", "{{.Id}}", &name]);
    assert_eq!(pulled.trim(), id.trim());
}

#[test]
fn a_tls_only_registry_on_loopback_is_reached_without_a_flag() {
    // Loopback registries are insecure, as in docker: plain HTTP, or HTTPS without verification
    // when the port speaks only TLS (a port-forwarded remote registry, say).
    let registry = TestRegistry::start_tls_on("127.0.0.1");
    let dc = tempfile::tempdir().unwrap();
    let src = TestRoot::new();
    let name = format!("{}/tls/bb:1", registry.host());
    let id = src.import_busybox(&name);
    let digest = ok(&src, dc.path(), &["push", "-q", &name]);
    let inspect = run_ok(
        "skopeo",
        &["inspect", "--tls-verify=false", &format!("docker://{name}")],
    );
    let doc: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(doc["Digest"], digest.trim());
    let dst = TestRoot::new();
    ok(&dst, dc.path(), &["pull", "-q", &name]);
    let pulled = ok(&dst, dc.path(), &["inspect", "-f", "{{.Id}}", &name]);
    assert_eq!(pulled.trim(), id.trim());
}

#[test]
fn pull_platform_flag_picks_or_refuses() {
    let registry = TestRegistry::start();
    let dc = tempfile::tempdir().unwrap();
    let src = TestRoot::new();
    let name = format!("{}/plat/bb:1", registry.host());
    let id = src.import_busybox(&name);
    ok(&src, dc.path(), &["push", "-q", &name]);
    let arch = ok(
        &src,
        dc.path(),
        &["inspect", "-f", "{{.Architecture}}", &name],
    );
    let dst = TestRoot::new();
    let refused = rb(
        &dst,
        dc.path(),
        &["pull", "-q", "--platform", "linux/s390x", &name],
        None,
    );
    assert!(
        !refused.status.success(),
        "{}",
        describe(&["pull"], &refused)
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("no image for platform linux/s390x")
            && err.contains(&format!("linux/{}", arch.trim())),
        "{err}"
    );
    let bad = rb(
        &dst,
        dc.path(),
        &["pull", "--platform", "linux", &name],
        None,
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("OS/ARCH"),
        "{}",
        describe(&["pull"], &bad)
    );
    let platform = format!("linux/{}", arch.trim());
    ok(
        &dst,
        dc.path(),
        &["pull", "-q", "--platform", &platform, &name],
    );
    let pulled = ok(&dst, dc.path(), &["inspect", "-f", "{{.Id}}", &name]);
    assert_eq!(pulled.trim(), id.trim());
}
