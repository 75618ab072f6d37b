//! Docker interoperability against a real Docker engine (Debian's docker.io) that the test starts
//! itself, next to a real registry: images rbuild saves or pushes are loaded, pulled and run by
//! docker with the same image ID, and images docker builds, pushes or saves are pulled or loaded
//! and run by rbuild with the same image ID.
//!
//! All checks share one engine and run in sequence in ONE test function: starting dockerd is the
//! slow part, and one engine per test binary run keeps the suite fast. If docker.io is not
//! installed the test fails naming the package (scripts/install-deps installs it).

mod common;
#[path = "common/dockerd.rs"]
mod dockerd;
#[path = "common/registry.rs"]
mod registry_server;

use common::{busybox_rootfs, describe, rbuild_bin, TestRoot};
use dockerd::TestDockerd;
use registry_server::TestRegistry;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// rbuild with a store root and an isolated Docker/rbuild config (no host credentials).
struct Rbuild<'a> {
    root: &'a TestRoot,
    config: &'a Path,
}

impl Rbuild<'_> {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(rbuild_bin())
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .env("DOCKER_CONFIG", self.config)
            .env("RBUILD_CONFIG", self.config.join("no-rbuild-config.json"))
            .stdin(Stdio::null())
            .output()
            .expect("run rbuild binary")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{}", describe(args, &out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `rbuild inspect NAME` parsed (docker-style: an array with one object).
    fn inspect(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["inspect", name])).expect("rbuild inspect JSON");
        match v {
            serde_json::Value::Array(mut a) if a.len() == 1 => a.remove(0),
            other => other,
        }
    }
}

/// `docker image inspect NAME` parsed.
fn docker_inspect(docker: &TestDockerd, name: &str) -> serde_json::Value {
    let out = docker.ok(&["image", "inspect", name]);
    let mut v: Vec<serde_json::Value> = serde_json::from_str(&out).expect("docker inspect JSON");
    assert_eq!(v.len(), 1, "docker image inspect {name}: {out}");
    v.remove(0)
}

/// Asserts docker and rbuild describe the same image: ID (= config digest), layer diff IDs, Cmd,
/// Env, Entrypoint and WorkingDir.
fn assert_same_image(what: &str, docker: &serde_json::Value, rbuild: &serde_json::Value) {
    let id = docker["Id"].as_str().unwrap_or_default();
    assert!(
        id.starts_with("sha256:"),
        "{what}: docker shows no ID: {docker}"
    );
    let layers = docker.pointer("/RootFS/Layers").and_then(|l| l.as_array());
    assert!(
        layers.is_some_and(|l| !l.is_empty()),
        "{what}: docker shows no layers: {docker}"
    );
    for ptr in [
        "/Id",
        "/RootFS/Layers",
        "/Config/Cmd",
        "/Config/Env",
        "/Config/Entrypoint",
        "/Config/WorkingDir",
        "/Architecture",
        "/Os",
    ] {
        let d = docker.pointer(ptr).cloned().unwrap_or_default();
        let r = rbuild.pointer(ptr).cloned().unwrap_or_default();
        // docker shows an unset WorkingDir/Entrypoint as "" / null; rbuild may omit it.
        let empty = |v: &serde_json::Value| v.is_null() || v.as_str() == Some("");
        assert!(
            d == r || (empty(&d) && empty(&r)),
            "{what}: {ptr} differs\ndocker: {d}\nrbuild: {r}"
        );
    }
}

/// The manifest digest from `rbuild push` output (`TAG: digest: sha256:... size: N`).
fn pushed_digest(out: &str) -> String {
    let digest = out
        .split("digest: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in push output: {out}"));
    assert!(digest.starts_with("sha256:"), "push printed {digest:?}");
    digest.to_string()
}

/// The `Id` field of an inspect object.
fn id_of(v: &serde_json::Value) -> &str {
    v["Id"].as_str().unwrap_or_default()
}

/// A RUN step making /t with the file kinds a layer tar must carry: a hard link, a symlink, a
/// setuid file owned by 1000:2000, a fifo, an empty directory, names over 100 and 255 bytes of
/// path (PAX/GNU long names), a non-ASCII name with a space, an old mtime and mode 0600.
fn tree_run() -> String {
    let deep = format!("/t/deep/{}/{}", "d".repeat(60), "e".repeat(60));
    format!(
        "RUN mkdir -p /t/empty {deep} && cd /t && echo data > f && ln f hard && ln -s f soft \\\n\
         && chown 1000:2000 f && chmod 4755 f && mkfifo fifo && echo long > {deep}/{long} \\\n\
         && echo u > '/t/ünï cødé' \\\n\
         && touch -d '2001-02-03 04:05:06' /t/old && chmod 0600 /t/old\n",
        long = "n".repeat(120)
    )
}

/// Lists /t (name, mode, owner, size, link count, mtime, kind) and reads the links, in a
/// container of either tool.
const TREE_LIST: &str = "cd /t && find . | sort | while read p; do \
    stat -c '%n %A %u:%g %s %h %Y %F' \"$p\"; done; cat hard soft";

/// Writes a build context with this Dockerfile and returns its directory.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("context dir");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    dir
}

#[test]
fn docker_engine_loads_pulls_and_runs_rbuild_images_and_rbuild_reads_docker_images() {
    let started = Instant::now();
    let registry = TestRegistry::start();
    let docker = TestDockerd::start(&[registry.host()]);
    eprintln!("dockerd up after {:?}", started.elapsed());
    let config = tempfile::tempdir().expect("config dir");
    let store = TestRoot::new();
    let rb = Rbuild {
        root: &store,
        config: config.path(),
    };
    let tmp = tempfile::tempdir().expect("work dir");

    // 1. rbuild save -> docker load: same ID and config; docker runs it.
    let t = Instant::now();
    let rootfs = tempfile::tempdir().expect("rootfs dir");
    busybox_rootfs(rootfs.path());
    let id = rb
        .ok(&[
            "import",
            "--change",
            r#"CMD ["sh"]"#,
            "--change",
            "ENV GREETING=hello PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            rootfs.path().to_str().expect("utf-8 path"),
            "busybox",
        ])
        .trim()
        .to_string();
    let archive = tmp.path().join("busybox.tar");
    let archive_s = archive.to_str().expect("utf-8 path");
    rb.ok(&["save", "-o", archive_s, "busybox"]);
    let loaded = docker.ok(&["load", "-i", archive_s]);
    assert!(
        loaded.contains("busybox:latest"),
        "docker load did not name the image: {loaded}"
    );
    let d = docker_inspect(&docker, "busybox:latest");
    let r = rb.inspect("busybox");
    assert_eq!(d["Id"], id, "docker's image ID is rbuild's config digest");
    assert_same_image("rbuild save -> docker load", &d, &r);
    assert_eq!(
        d["Config"]["Env"],
        serde_json::json!(["GREETING=hello", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
    );
    let passwd = docker.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "cat /etc/passwd; echo $GREETING",
    ]);
    assert!(
        passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n") && passwd.ends_with("hello\n"),
        "docker run of the loaded image printed {passwd:?}"
    );
    eprintln!("1. save -> docker load/run: {:?}", t.elapsed());

    // 2. rbuild build + push (OCI, and Docker v2s2 with --format docker) -> docker pull and run.
    let t = Instant::now();
    let ctx = context(&format!(
        // The third RUN leaves whiteouts (a deleted file in a lower layer, /bin/vi) and an
        // opaque directory (/srv/old replaced): docker must apply them as rbuild wrote them.
        "FROM busybox\n{}RUN mkdir -p /srv/old && echo x > /srv/old/x && echo gone > /srv/gone.txt\n\
         RUN rm /srv/gone.txt /bin/vi && rm -rf /srv/old && mkdir /srv/old && echo y > /srv/old/y \\\n\
         && echo built-by-rbuild > /srv/greeting.txt\n\
         WORKDIR /srv\n\
         CMD [\"sh\", \"-c\", \"cat greeting.txt; ls old; ls gone.txt /bin/vi 2>&1 | grep -c 'No such'\"]\n",
        tree_run()
    ));
    let built = format!("{}/interop/rbuild-built:1", registry.host());
    rb.ok(&[
        "build",
        "-t",
        &built,
        ctx.path().to_str().expect("utf-8 path"),
    ]);
    let built_v2s2 = format!("{}/interop/rbuild-built:v2s2", registry.host());
    rb.ok(&["tag", &built, &built_v2s2]);
    let digests = [
        pushed_digest(&rb.ok(&["push", &built])),
        pushed_digest(&rb.ok(&["push", "--format", "docker", &built_v2s2])),
    ];
    assert_ne!(
        digests[0], digests[1],
        "OCI and v2s2 manifests are different documents"
    );
    let r = rb.inspect(&built);
    let rbuild_tree = rb.ok(&["run", "--rm", &built, "sh", "-c", TREE_LIST]);
    assert!(rbuild_tree.ends_with("data\ndata\n"), "{rbuild_tree}");
    for (reference, digest) in [&built, &built_v2s2].into_iter().zip(&digests) {
        docker.ok(&["pull", reference]);
        // By digest too: docker checks the manifest bytes against the digest rbuild printed.
        let (repo, _) = reference.rsplit_once(':').expect("tagged reference");
        docker.ok(&["pull", &format!("{repo}@{digest}")]);
        let d = docker_inspect(&docker, reference);
        assert_same_image(&format!("rbuild push -> docker pull {reference}"), &d, &r);
        let out = docker.ok(&["run", "--rm", "--network", "none", reference]);
        assert_eq!(out, "built-by-rbuild\ny\n2\n", "docker run {reference}");
        let docker_tree = docker.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            reference,
            "sh",
            "-c",
            TREE_LIST,
        ]);
        assert_eq!(
            docker_tree, rbuild_tree,
            "docker and rbuild see different files in {reference}"
        );
        let history = docker.ok(&["history", "-q", "--no-trunc", reference]);
        assert!(
            history.contains(id_of(&d)),
            "docker history {reference} does not show the image: {history}"
        );
        // Also through the file system, without running anything.
        let cid = docker.ok(&["create", reference]).trim().to_string();
        let copied = tmp.path().join("copied.txt");
        let copied_s = copied.to_str().expect("utf-8 path");
        docker.ok(&["cp", &format!("{cid}:/srv/greeting.txt"), copied_s]);
        docker.ok(&["rm", &cid]);
        assert_eq!(
            std::fs::read_to_string(&copied).expect("read copied file"),
            "built-by-rbuild\n"
        );
        std::fs::remove_file(&copied).expect("remove copied file");
    }
    eprintln!("2. build/push -> docker pull/run: {:?}", t.elapsed());

    // 3. docker build + push (Docker v2s2, gzip layers) -> rbuild pull and run in a fresh store.
    let t = Instant::now();
    let dctx = context(&format!(
        // Whiteouts and an opaque directory the other way round: written by docker's overlay2
        // differ, applied by rbuild.
        "FROM busybox\n{}RUN mkdir -p /d/old && echo x > /d/old/x && echo gone > /d/gone.txt\n\
         RUN rm /d/gone.txt /bin/vi && rm -rf /d/old && mkdir /d/old && echo y > /d/old/y \\\n\
         && echo built-by-docker > /made-by.txt\nENV MADE_BY=docker\n\
         CMD [\"sh\", \"-c\", \"cat /made-by.txt; echo $MADE_BY; ls /d/old; \\\n\
         ls /d/gone.txt /bin/vi 2>&1 | grep -c 'No such'\"]\n",
        tree_run()
    ));
    let mut build = docker.command();
    build
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--network", "none", "-q", "-t", "docker-built:1"])
        .arg(dctx.path());
    let out = build.output().expect("run docker build");
    assert!(
        out.status.success(),
        "docker build failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = format!("{}/x/y:1", registry.host());
    docker.ok(&["tag", "docker-built:1", &pushed]);
    docker.ok(&["push", &pushed]);
    let d = docker_inspect(&docker, &pushed);
    let manifest = docker.ok(&["manifest", "inspect", "--insecure", &pushed]);
    assert!(
        manifest.contains("application/vnd.docker.distribution.manifest.v2+json")
            && manifest.contains("application/vnd.docker.image.rootfs.diff.tar.gzip"),
        "docker pushed something other than a v2s2 manifest with gzip layers: {manifest}"
    );
    let fresh = TestRoot::new();
    let rb2 = Rbuild {
        root: &fresh,
        config: config.path(),
    };
    rb2.ok(&["pull", &pushed]);
    assert_same_image("docker push -> rbuild pull", &d, &rb2.inspect(&pushed));
    assert_eq!(
        rb2.ok(&["run", "--rm", &pushed]),
        "built-by-docker\ndocker\ny\n2\n"
    );
    let docker_tree = docker.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &pushed,
        "sh",
        "-c",
        TREE_LIST,
    ]);
    assert!(docker_tree.ends_with("data\ndata\n"), "{docker_tree}");
    assert_eq!(
        rb2.ok(&["run", "--rm", &pushed, "sh", "-c", TREE_LIST]),
        docker_tree,
        "rbuild sees different files than docker in the image docker built"
    );
    eprintln!("3. docker build/push -> rbuild pull/run: {:?}", t.elapsed());

    // 4. docker save -> rbuild load and run in another fresh store. Two images sharing the
    // busybox layer: docker (before 25) writes that layer.tar once and, for the second image,
    // a symlink `<v1 id>/layer.tar -> ../<other v1 id>/layer.tar`, which load must follow.
    let t = Instant::now();
    let saved = tmp.path().join("docker-saved.tar");
    let saved_s = saved.to_str().expect("utf-8 path");
    docker.ok(&["save", "-o", saved_s, "docker-built:1", "busybox:latest"]);
    let fresh = TestRoot::new();
    let rb3 = Rbuild {
        root: &fresh,
        config: config.path(),
    };
    rb3.ok(&["load", "-i", saved_s]);
    assert_same_image(
        "docker save -> rbuild load",
        &d,
        &rb3.inspect("docker-built:1"),
    );
    assert_same_image(
        "docker save -> rbuild load (shared layer)",
        &docker_inspect(&docker, "busybox:latest"),
        &rb3.inspect("busybox"),
    );
    assert_eq!(
        rb3.ok(&["run", "--rm", "docker-built:1"]),
        "built-by-docker\ndocker\ny\n2\n"
    );
    assert_eq!(
        rb3.ok(&["run", "--rm", "busybox", "sh", "-c", "echo $GREETING"]),
        "hello\n"
    );
    eprintln!("4. docker save -> rbuild load/run: {:?}", t.elapsed());
    eprintln!("total: {:?}", started.elapsed());
}
