//! Every Dockerfile instruction, checked by running the built image (and, for config-only
//! fields, by reading its config).

mod build_support;
mod common;

use build_support::{build, build_ok, config_json, run_sh, Context};
use common::TestRoot;
use std::io::{Read, Write};

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// Serves the current `body` for every request on 127.0.0.1 (a dynamic port); returns the URL
/// base. The body can be changed between requests.
fn serve_shared(body: Arc<Mutex<Vec<u8>>>) -> String {
    serve_with_headers(body, Arc::new(Mutex::new(String::new())))
}

/// As [`serve_shared`], with extra response header lines (each ending in `\r\n`), which can
/// change between requests too.
fn serve_with_headers(body: Arc<Mutex<Vec<u8>>>, headers: Arc<Mutex<String>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = body.lock().map(|b| b.clone()).unwrap_or_default();
            let extra = headers.lock().map(|h| h.clone()).unwrap_or_default();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}")
}

fn serve(body: Vec<u8>) -> String {
    serve_shared(Arc::new(Mutex::new(body)))
}

/// Makes `DIR/NAME` with `content` and packs it with the system's tar, compressed by `flag`
/// (`""`, `-z`, `-j`, `-J` or `--zstd`); returns the archive bytes.
fn archive(name: &str, content: &[u8], flag: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let file = src.join(name);
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(&file, content).expect("write");
    let out = dir.path().join("a.tar");
    let mut cmd = std::process::Command::new("tar");
    cmd.arg("-C").arg(&src).arg("-c");
    if !flag.is_empty() {
        cmd.arg(flag);
    }
    let status = cmd
        .arg("-f")
        .arg(&out)
        .arg(name.split('/').next().expect("name"))
        .status();
    assert!(status.expect("run tar").success(), "tar {flag} failed");
    std::fs::read(&out).expect("read archive")
}

fn sha256_of(data: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("f");
    std::fs::write(&p, data).expect("write");
    let out = std::process::Command::new("sha256sum")
        .arg(&p)
        .output()
        .expect("sha256sum");
    let text = String::from_utf8_lossy(&out.stdout);
    format!("sha256:{}", text.split_whitespace().next().expect("hash"))
}

#[test]
fn metadata_instructions_end_up_in_the_config_and_the_container() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        r#"# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM $BASE
MAINTAINER rbuild tests
ARG VERSION=1.2
ENV APP_HOME=/srv/app \
    APP_VERSION=$VERSION
LABEL org.example.version=$VERSION "org.example.name"="demo app"
WORKDIR $APP_HOME
WORKDIR sub
USER nobody:nogroup
EXPOSE 8080 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=2s --retries=3 CMD wget -q -O- http://localhost:8080/ || exit 1
SHELL ["/bin/sh", "-ec"]
ENTRYPOINT ["/bin/echo", "entry"]
CMD ["default-arg"]
"#,
    );
    let (id, out) = build_ok(&root, &ctx, &["-t", "meta:1", "--label", "extra=yes"]);
    assert!(out.contains("STEP 1/15: FROM $BASE"), "{out}");
    // USER, WORKDIR and ENV as the container sees them.
    let o = run_sh(
        &root,
        "meta:1",
        "echo $(id -u):$(id -g) $(pwd) $APP_HOME $APP_VERSION",
    );
    assert_eq!(o.trim(), "65534:65534 /srv/app/sub /srv/app 1.2");
    let c = config_json(&root, &id);
    let cfg = &c["config"];
    assert_eq!(c["author"], "rbuild tests");
    assert_eq!(cfg["Labels"]["org.example.version"], "1.2");
    assert_eq!(cfg["Labels"]["org.example.name"], "demo app");
    assert_eq!(cfg["Labels"]["extra"], "yes");
    assert!(cfg["ExposedPorts"].get("8080/tcp").is_some(), "{cfg}");
    assert!(cfg["ExposedPorts"].get("53/udp").is_some(), "{cfg}");
    assert!(cfg["Volumes"].get("/data").is_some(), "{cfg}");
    assert_eq!(cfg["StopSignal"], "SIGTERM");
    assert_eq!(cfg["Healthcheck"]["Test"][0], "CMD-SHELL");
    assert_eq!(cfg["Healthcheck"]["Interval"], 5_000_000_000u64);
    assert_eq!(cfg["Healthcheck"]["Retries"], 3);
    assert_eq!(cfg["Shell"][1], "-ec");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/echo", "entry"]));
    assert_eq!(cfg["Cmd"], serde_json::json!(["default-arg"]));
    // Metadata steps add history entries without layers.
    let history = c["history"].as_array().expect("history");
    assert!(history
        .iter()
        .any(|h| h["created_by"] == "EXPOSE 8080 53/udp" && h["empty_layer"] == true));
}

#[test]
fn run_copy_add_and_heredocs_change_files() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let gz = archive("pkg/readme.txt", b"from the archive\n", "-z");
    let remote = b"remote file\n".to_vec();
    let digest = sha256_of(&remote);
    let url = serve(remote);
    let ctx = Context::new(&format!(
        r#"FROM busybox
COPY --chown=nobody:nogroup --chmod=0750 app/ /opt/app/
COPY top.txt /opt/single
COPY *.md /docs/
ADD pkg.tar.gz /unpacked/
ADD plain.tar /plain/
ADD --checksum={digest} {url}/files/remote.txt /downloads/
COPY <<EOF /etc/motd
hello $HOSTNAME_UNSET heredoc
EOF
SHELL ["/bin/sh", "-c"]
RUN <<EOT
echo one > /from-heredoc
echo two >> /from-heredoc
EOT
RUN ["/bin/sh", "-c", "echo exec-form > /exec.txt"]
"#
    ));
    ctx.write("app/bin/tool", "#!/bin/sh\necho tool\n");
    ctx.write("app/lib/data.txt", "data\n");
    ctx.write("top.txt", "top\n");
    ctx.write("a.md", "a\n");
    ctx.write("b.md", "b\n");
    ctx.write("pkg.tar.gz", &gz);
    ctx.write("plain.tar", archive("p.txt", b"plain\n", ""));
    let (id, _) = build_ok(&root, &ctx, &["-t", "files"]);
    let out = run_sh(
        &root,
        &id,
        "stat -c '%U:%G %a' /opt/app/bin/tool; stat -c %U /opt/app; cat /opt/app/lib/data.txt /opt/single; \
         ls /docs; cat /unpacked/pkg/readme.txt /plain/p.txt /downloads/remote.txt /etc/motd \
         /from-heredoc /exec.txt; stat -c %a /downloads/remote.txt",
    );
    assert_eq!(
        out,
        "nobody:nogroup 750\nnobody\ndata\ntop\na.md\nb.md\nfrom the archive\nplain\nremote file\n\
         hello  heredoc\none\ntwo\nexec-form\n600\n"
    );
}

#[test]
fn add_extracts_bzip2_xz_and_zstd_archives() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let bz = archive("x.txt", b"x\n", "-j");
    let xz = archive("x.txt", b"x\n", "-J");
    let zst = archive("x.txt", b"x\n", "--zstd");
    let ctx = Context::new(
        "FROM busybox\nADD a.tar.bz2 /bz/\nADD a.tar.xz /xz/\nADD a.tar.zst /zst/\nCOPY a.tar.zst /copied/\n",
    );
    ctx.write("a.tar.bz2", bz);
    ctx.write("a.tar.xz", xz);
    ctx.write("a.tar.zst", &zst);
    let (id, _) = build_ok(&root, &ctx, &[]);
    let out = run_sh(&root, &id, "cat /bz/x.txt /xz/x.txt /zst/x.txt; ls /copied");
    assert_eq!(out, "x\nx\nx\na.tar.zst\n");
}

#[test]
fn onbuild_triggers_run_in_the_child_build() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let parent = Context::new(
        "FROM busybox\nONBUILD COPY marker.txt /marker\nONBUILD RUN echo triggered > /trig\n",
    );
    build_ok(&root, &parent, &["-t", "parent"]);
    let c = config_json(&root, "parent");
    assert_eq!(c["config"]["OnBuild"][0], "COPY marker.txt /marker");
    let child = Context::new("FROM parent\nRUN cat /marker /trig\n");
    child.write("marker.txt", "marker\n");
    let (id, out) = build_ok(&root, &child, &[]);
    assert!(out.contains("triggered"), "{out}");
    assert_eq!(
        run_sh(&root, &id, "cat /marker /trig"),
        "marker\ntriggered\n"
    );
    // Triggers do not pass on to grandchildren.
    assert!(config_json(&root, &id)["config"].get("OnBuild").is_none());
}

#[test]
fn build_args_are_visible_to_run_but_not_kept() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nARG WHO=world\nRUN echo hello $WHO > /greeting\n");
    let (id, out) = build_ok(
        &root,
        &ctx,
        &[
            "--build-arg",
            "WHO=rbuild",
            "--build-arg",
            "UNUSED=1",
            "--build-arg",
            "HTTP_PROXY=x",
        ],
    );
    assert!(
        out.contains("build args not consumed by any ARG: UNUSED\n"),
        "{out}"
    );
    assert_eq!(run_sh(&root, &id, "cat /greeting"), "hello rbuild\n");
    let c = config_json(&root, &id);
    assert!(!c["config"]["Env"].to_string().contains("WHO"), "{c}");
    let (id2, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(run_sh(&root, &id2, "cat /greeting"), "hello world\n");
}

#[test]
fn network_none_leaves_only_loopback() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nRUN ls /sys/class/net > /nets\n");
    let (id, _) = build_ok(&root, &ctx, &["--network", "none"]);
    assert_eq!(run_sh(&root, &id, "cat /nets"), "lo\n");
    let out = build(&root, &ctx, &["--network", "bogus"]);
    assert!(!out.status.success());
}

#[test]
fn env_in_one_instruction_sees_the_previous_environment_and_log_is_kept() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nENV A=old\nENV A=new B=$A\nARG A=arg-loses\nRUN echo \"$A $B\" && echo logged-line\n",
    );
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(run_sh(&root, &id, "echo $A $B"), "new old\n");
    // The full build log is kept in the store, RUN output included.
    let logs = root.path().join("cache/logs");
    let found = std::fs::read_dir(&logs)
        .expect("build logs dir")
        .filter_map(|e| e.ok())
        .any(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            text.contains("STEP 5/5: RUN") && text.contains("new old\nlogged-line")
        });
    assert!(
        found,
        "no build log with the RUN output in {}",
        logs.display()
    );
}

#[test]
fn add_url_is_keyed_by_content_and_checked_against_checksum() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let body = Arc::new(Mutex::new(b"version 1\n".to_vec()));
    let url = serve_shared(body.clone());
    let ctx = Context::new(&format!("FROM busybox\nADD {url}/v.txt /v.txt\n"));
    let (id1, _) = build_ok(&root, &ctx, &[]);
    let (id1b, out) = build_ok(&root, &ctx, &[]);
    assert_eq!(id1, id1b, "{out}");
    *body.lock().unwrap() = b"version 2\n".to_vec();
    let (id2, _) = build_ok(&root, &ctx, &[]);
    assert_ne!(id1, id2);
    assert_eq!(run_sh(&root, &id2, "cat /v.txt"), "version 2\n");
    let wrong = Context::new(&format!(
        "FROM busybox\nADD --checksum=sha256:{} {url}/v.txt /v.txt\n",
        "0".repeat(64)
    ));
    let out = build(&root, &wrong, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:2") && err.contains("checksum"),
        "{err}"
    );
}

#[test]
fn add_url_takes_its_mtime_from_last_modified() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let body = Arc::new(Mutex::new(b"dated\n".to_vec()));
    let headers = Arc::new(Mutex::new(
        "Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n".to_string(),
    ));
    let url = serve_with_headers(body, headers.clone());
    let ctx = Context::new(&format!(
        "FROM busybox\nADD {url}/d.txt /d.txt\nADD --checksum=sha256:{} {url}/c.txt /c.txt\n",
        sha256_of(b"dated\n").trim_start_matches("sha256:")
    ));
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(
        run_sh(&root, &id, "stat -c %Y /d.txt /c.txt"),
        "1445412480\n1445412480\n"
    );
    let layers = build_support::layer_listings(&root, &id);
    assert!(
        layers[1].contains("2015-10-21 07:28 d.txt"),
        "{}",
        layers[1]
    );
    // The key is the content: another Last-Modified alone reuses the step.
    *headers.lock().unwrap() = "Last-Modified: Thu, 01 Jan 2004 00:00:00 GMT\r\n".into();
    let (again, out) = build_ok(&root, &ctx, &[]);
    assert_eq!(again, id, "{out}");
    // --timestamp clamps it in the layer like any newer mtime.
    let (clamped, _) = build_ok(&root, &ctx, &["--no-cache", "--timestamp", "1000000000"]);
    let layers = build_support::layer_listings(&root, &clamped);
    assert!(
        layers[1].contains("2001-09-09 01:46 d.txt"),
        "{}",
        layers[1]
    );
    // Without the header the file is new: dated at the build, not at the epoch.
    *headers.lock().unwrap() = String::new();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (undated, _) = build_ok(&root, &ctx, &["--no-cache"]);
    let mtime: u64 = run_sh(&root, &undated, "stat -c %Y /d.txt")
        .trim()
        .parse()
        .expect("mtime");
    assert!(mtime >= before, "{mtime} < {before}");
}

#[test]
fn chmod_takes_symbolic_modes_relative_to_each_file() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox AS b\nRUN mkdir /o && echo o > /o/f && chmod 600 /o/f\n\
         FROM busybox\nARG M=g=u\nCOPY --chmod=u+x,g-w f /f\nCOPY --chmod=a+X,go-w d /d/\n\
         COPY --from=b --chmod=$M /o/f /from\nCOPY --chmod=0640 f /octal\n",
    );
    ctx.write("f", "f\n");
    ctx.chmod("f", 0o664);
    ctx.write("d/plain", "p\n");
    ctx.chmod("d/plain", 0o666);
    ctx.write("d/tool", "t\n");
    ctx.chmod("d/tool", 0o700);
    std::fs::create_dir(ctx.path().join("d/sub")).expect("mkdir");
    ctx.chmod("d/sub", 0o700);
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(
        run_sh(
            &root,
            &id,
            "stat -c '%a %n' /f /d/plain /d/tool /d/sub /from /octal"
        ),
        "744 /f\n644 /d/plain\n711 /d/tool\n711 /d/sub\n660 /from\n640 /octal\n"
    );
    // A bad mode fails with its line before any step runs.
    let bad = Context::new("FROM busybox\nRUN echo ran-before\nCOPY --chmod=u+z f /f\n");
    bad.write("f", "f\n");
    let out = build(&root, &bad, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:3") && err.contains("--chmod=u+z"),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("ran-before"),
        "the RUN ran before the error"
    );
}

#[test]
fn add_checksum_and_chmod_take_sha512_and_build_args() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let body = b"checked\n".to_vec();
    let url = serve(body.clone());
    let sha512 = {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, &body).expect("write");
        let out = std::process::Command::new("sha512sum")
            .arg(&p)
            .output()
            .expect("sha512sum");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        format!("sha512:{}", text.split_whitespace().next().expect("hash"))
    };
    let ctx = Context::new(&format!(
        "FROM busybox\nARG SUM\nARG MODE=0750\nADD --checksum=$SUM --chmod=$MODE {url}/c.txt /c.txt\n\
         COPY --chmod=$MODE f /f\n"
    ));
    ctx.write("f", "f\n");
    let (id, _) = build_ok(&root, &ctx, &["--build-arg", &format!("SUM={sha512}")]);
    assert_eq!(
        run_sh(&root, &id, "cat /c.txt; stat -c %a /c.txt /f"),
        "checked\n750\n750\n"
    );
    // A wrong sha512 fails with the line.
    let wrong = format!("SUM=sha512:{}", "0".repeat(128));
    let out = build(&root, &ctx, &["--build-arg", &wrong]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:4") && err.contains(&format!("is {sha512}")),
        "{err}"
    );
}

#[test]
fn workdir_creates_its_directory_in_the_image_owned_by_the_user() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nWORKDIR /app/sub\nUSER nobody\nWORKDIR /home/n/w\nUSER 4321\nWORKDIR rel\n\
         USER root\nWORKDIR /tmp\n",
    );
    let (id, _) = build_ok(&root, &ctx, &["-t", "wd"]);
    // The directories are in the image itself: another build copies them out of it.
    let copy =
        Context::new("FROM busybox\nCOPY --from=wd /app /app2\nCOPY --from=wd /home/n /n2\n");
    let (copied, _) = build_ok(&root, &copy, &[]);
    assert_eq!(
        run_sh(&root, &copied, "find /app2 /n2 | sort"),
        "/app2\n/app2/sub\n/n2\n/n2/w\n/n2/w/rel\n"
    );
    // New dirs belong to the USER in effect (name or number, as RUN would run); existing ones
    // (/home, /tmp) are left as they were.
    assert_eq!(
        run_sh(
            &root,
            &id,
            "stat -c '%u:%g %a %n' /app/sub /home /home/n /home/n/w /home/n/w/rel /tmp; pwd"
        ),
        "0:0 755 /app/sub\n0:0 755 /home\n65534:65534 755 /home/n\n65534:65534 755 /home/n/w\n\
         4321:0 755 /home/n/w/rel\n0:0 1777 /tmp\n/tmp\n"
    );
    // A WORKDIR that exists already adds no layer: three WORKDIRs made dirs, /tmp did not.
    let c = config_json(&root, &id);
    let base = config_json(&root, "busybox");
    let layers = |c: &serde_json::Value| c["rootfs"]["diff_ids"].as_array().map(Vec::len);
    assert_eq!(layers(&c), layers(&base).map(|n| n + 3));
    let history = c["history"].as_array().expect("history");
    assert!(history
        .iter()
        .any(|h| h["created_by"] == "WORKDIR /tmp" && h["empty_layer"] == true));
    // A WORKDIR naming a file is an error with its line.
    let bad = Context::new("FROM busybox\nRUN touch /f\nWORKDIR /f\n");
    let out = build(&root, &bad, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("Dockerfile:3")
            && last.contains("/f exists in the image and is not a directory"),
        "{err}"
    );
}

#[test]
fn a_base_without_path_gets_the_default_path_as_in_buildkit() {
    let root = TestRoot::new();
    // The imported busybox sets no Env at all.
    root.import_busybox("busybox");
    assert!(config_json(&root, "busybox")["config"]["Env"].is_null());
    let ctx = Context::new(
        "FROM busybox\nENV PATH=/custom/bin:$PATH\nRUN mkdir -p /custom/bin && \
         printf '#!/bin/sh\\necho custom tool\\n' > /custom/bin/tool && chmod +x /custom/bin/tool\n\
         RUN tool > /out && ls / > /dev/null\n",
    );
    let (id, _) = build_ok(&root, &ctx, &[]);
    let default = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    assert_eq!(
        config_json(&root, &id)["config"]["Env"],
        serde_json::json!([format!("PATH=/custom/bin:{default}")])
    );
    assert_eq!(
        run_sh(&root, &id, "cat /out; tool"),
        "custom tool\ncustom tool\n"
    );
    // Without any ENV the image carries the default PATH too.
    let plain = Context::new("FROM busybox\nRUN true\n");
    let (id, _) = build_ok(&root, &plain, &[]);
    assert_eq!(
        config_json(&root, &id)["config"]["Env"],
        serde_json::json!([format!("PATH={default}")])
    );
}

#[test]
fn proxy_args_reach_run_without_arg_and_stay_out_of_the_image_and_cache() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nENV LEGACY value with spaces\nADD --chown=nobody:nogroup f /owned\n\
         RUN echo \"$HTTP_PROXY|$no_proxy|$LEGACY\" > /p\n",
    );
    ctx.write("f", "f\n");
    let proxy = |v: &str| {
        vec![
            "--build-arg".to_string(),
            format!("HTTP_PROXY=http://{v}:3128"),
            "--build-arg".to_string(),
            "no_proxy=localhost".to_string(),
        ]
    };
    let args = proxy("one");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (id, out) = build_ok(&root, &ctx, &args);
    assert!(!out.contains("not consumed"), "{out}");
    assert_eq!(
        run_sh(&root, &id, "cat /p; stat -c %U:%G /owned"),
        "http://one:3128|localhost|value with spaces\nnobody:nogroup\n"
    );
    // Neither the config nor the history holds the proxy.
    let c = config_json(&root, &id);
    assert!(!c.to_string().contains("one:3128"), "{c}");
    assert_eq!(
        c["config"]["Env"][1],
        serde_json::json!("LEGACY=value with spaces")
    );
    // Another proxy does not invalidate the cache (Docker leaves them out of cache keys).
    let args = proxy("two");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (id2, out) = build_ok(&root, &ctx, &args);
    assert_eq!(id, id2);
    assert_eq!(out.matches("--> CACHED").count(), 3, "{out}");
}
