//! The private network of RUN steps (the default when slirp4netns is installed) and of
//! `rbuild run --network private`: its own namespace behind slirp4netns, which reaches the
//! host's other addresses (and the outside) but not services bound to the host's loopback.

mod build_support;
mod common;

use build_support::{build, build_until_started, slirp_children_of, Context};
use common::{describe, TestRoot};
use std::io::Write;
use std::net::TcpListener;

/// A TCP server on every address of the host that answers each connection with "hello".
fn hello_server() -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = (&stream).write_all(b"hello\n");
        }
    });
    port
}

/// A shell line that prints "reached" or "blocked" for a TCP connection to `ip`:`port`.
fn probe(ip: &str, port: u16) -> String {
    format!("if nc -w 3 {ip} {port} </dev/null | grep -q hello; then echo {ip}:reached; else echo {ip}:blocked; fi")
}

#[test]
fn run_steps_reach_out_but_not_the_hosts_loopback_services() {
    assert!(
        rbuild_runner::slirp::available(),
        "slirp4netns is not installed: run scripts/install-deps"
    );
    let port = hello_server();
    let host_ip = common::non_loopback_ipv4();
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let script = format!(
        "{}; {}; ip -4 -o addr show tap0 | grep -o 'inet [0-9.]*'; cat /etc/resolv.conf",
        probe("127.0.0.1", port),
        probe(&host_ip, port)
    );
    let ctx = Context::new(&format!("FROM busybox\nRUN {script}\n"));
    let out = build(&root, &ctx, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&["build"], &out));
    for want in [
        "127.0.0.1:blocked".to_string(),
        format!("{host_ip}:reached"),
        "inet 10.0.2.100".to_string(),
        "nameserver 10.0.2.3".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    // --network host: the host's loopback is the step's own.
    let out = build(&root, &ctx, &["--network", "host"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("127.0.0.1:reached"),
        "{}",
        describe(&["build", "--network", "host"], &out)
    );

    // A container on the private network, then one on none (the default): no way out.
    let img = root.import_busybox("bb");
    let out = root.ok(&[
        "run",
        "--rm",
        "--network",
        "private",
        &img,
        "sh",
        "-c",
        &format!("{}; {}", probe("127.0.0.1", port), probe(&host_ip, port)),
    ]);
    assert_eq!(out, format!("127.0.0.1:blocked\n{host_ip}:reached\n"));
    let out = root.ok(&["run", "--rm", &img, "sh", "-c", &probe(&host_ip, port)]);
    assert_eq!(out, format!("{host_ip}:blocked\n"));
}

/// The private-network dirs (resolv.conf, hosts) of rbuild process `pid` in the temp dir.
fn net_dirs_of(pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("rbuild-net-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[test]
fn the_network_files_of_a_killed_build_are_removed_by_the_next_private_sandbox() {
    assert!(
        rbuild_runner::slirp::available(),
        "slirp4netns is not installed: run scripts/install-deps"
    );
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nRUN --mount=type=cache,target=/c,id=k touch /c/started && sleep 300\n",
    );
    let mut child = build_until_started(&root, &ctx, &[]);
    let pid = child.0.id();
    assert_eq!(net_dirs_of(pid).len(), 1, "the step's network files");
    child.0.kill().unwrap(); // SIGKILL, mid-RUN: nothing removes them now
    child.0.wait().unwrap();

    let ctx2 = Context::new("FROM busybox\nRUN true\n");
    let out = build(&root, &ctx2, &[]);
    assert!(out.status.success(), "{}", describe(&["build"], &out));
    assert_eq!(net_dirs_of(pid), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_dockerfile_gets_the_host_network_only_with_the_network_host_entitlement() {
    assert!(
        rbuild_runner::slirp::available(),
        "slirp4netns is not installed: run scripts/install-deps"
    );
    let port = hello_server();
    let root = TestRoot::new();
    root.import_busybox("busybox");
    // As BuildKit: RUN --network=host in a Dockerfile (which may come from anyone) would reach
    // the host's loopback services, so it needs `--allow network.host` (or --network host).
    let ctx = Context::new(&format!(
        "FROM busybox\nRUN echo first\nRUN --network=host {}\n",
        probe("127.0.0.1", port)
    ));
    let out = build(&root, &ctx, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&["build"], &out));
    assert!(
        err.contains("Dockerfile:3") && err.contains("--allow network.host"),
        "{err}"
    );
    // The step never ran (its command line shows in the STEP header, its output would be a
    // line of its own).
    let reached = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == "127.0.0.1:reached")
    };
    assert!(!reached(&out));
    for args in [&["--allow", "network.host"][..], &["--network", "host"][..]] {
        let out = build(&root, &ctx, args);
        assert!(out.status.success(), "{}", describe(args, &out));
        assert!(reached(&out), "{}", describe(args, &out));
    }
    let out = build(&root, &ctx, &["--allow", "security.insecure"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("security.insecure"),
        "{}",
        describe(&["build", "--allow", "security.insecure"], &out)
    );
}

#[test]
fn slirp4netns_runs_confined() {
    assert!(
        rbuild_runner::slirp::available(),
        "slirp4netns is not installed: run scripts/install-deps"
    );
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nRUN --mount=type=cache,target=/c,id=k touch /c/started && sleep 300\n",
    );
    let _child = build_until_started(&root, &ctx, &[]);
    let pid = _child.0.id();
    let slirp = slirp_children_of(pid as i32)
        .first()
        .map(|p| std::path::PathBuf::from(format!("/proc/{p}")))
        .expect("the step's slirp4netns");
    let status = std::fs::read_to_string(slirp.join("status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    // As podman runs it: under seccomp, and (as root) with no capability but
    // CAP_NET_BIND_SERVICE, in a mount namespace of its own.
    assert_eq!(field("Seccomp:"), "2", "{status}");
    assert_eq!(field("CapEff:"), "0000000000000400", "{status}");
    assert_ne!(
        std::fs::read_link(slirp.join("ns/mnt")).unwrap(),
        std::fs::read_link("/proc/self/ns/mnt").unwrap()
    );
}
