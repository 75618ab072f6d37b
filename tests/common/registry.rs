//! A real registry server for tests: Debian's reference registry (`/usr/bin/docker-registry`,
//! distribution 2.8) on 127.0.0.1 with a free port and a temporary storage directory, optionally
//! with htpasswd basic auth. The server is killed and its storage removed on drop.
//!
//! Use from a test file with `#[path = "common/registry.rs"] mod registry_server;` (or from a
//! crate's tests with a relative `#[path]`).
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry binary tests run.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry; killed on drop.
pub struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    host: String,
    credentials: Option<(String, String)>,
}

impl TestRegistry {
    /// Starts an open registry (no authentication).
    pub fn start() -> TestRegistry {
        Self::launch("127.0.0.1", None, false)
    }

    /// Starts an open registry listening on another address of this machine (`127.0.0.2`, or a
    /// non-loopback address to test HTTPS defaults).
    pub fn start_on(ip: &str) -> TestRegistry {
        Self::launch(ip, None, false)
    }

    /// Starts an open registry on `ip` that speaks only HTTPS, with a self-signed certificate
    /// (made by `openssl req`) that no client trusts.
    pub fn start_tls_on(ip: &str) -> TestRegistry {
        Self::launch(ip, None, true)
    }

    /// Starts a registry that requires basic auth with this user and password (htpasswd -Bbn).
    pub fn start_with_auth(user: &str, password: &str) -> TestRegistry {
        Self::launch(
            "127.0.0.1",
            Some((user.to_string(), password.to_string())),
            false,
        )
    }

    fn launch(ip: &str, credentials: Option<(String, String)>, tls: bool) -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-registry-")
            .tempdir()
            .expect("create registry temp dir");
        let mut last_err = String::new();
        // The port is picked free, then handed to the server; retry if another process took it.
        for _ in 0..5 {
            let port = free_port(ip);
            let host = format!("{ip}:{port}");
            let config = write_config(dir.path(), &host, credentials.as_ref(), tls);
            let log = std::fs::File::create(dir.path().join("registry.log"))
                .expect("create registry log");
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("start {REGISTRY_BIN} (scripts/install-deps installs it): {e}")
                });
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = format!("registry exited with {status}: {}", read_log(dir.path()));
                    break;
                }
                if TcpStream::connect(&host).is_ok() {
                    return TestRegistry {
                        child,
                        dir,
                        host,
                        credentials,
                    };
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
            if last_err.is_empty() {
                last_err = format!(
                    "registry did not listen on {host}: {}",
                    read_log(dir.path())
                );
            }
        }
        panic!("could not start a test registry: {last_err}");
    }

    /// `IP:PORT` (`127.0.0.1:PORT` unless started on another address), the registry part of
    /// image references.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `http://IP:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// The user and password of an auth-enabled registry.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The storage directory (for inspecting what was pushed).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port(ip: &str) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    l.local_addr().expect("local addr").port()
}

fn read_log(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
    log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
}

fn write_config(
    dir: &Path,
    host: &str,
    credentials: Option<&(String, String)>,
    tls: bool,
) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("create registry storage");
    let mut yaml = format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {host}\n  secret: rbuild-test-secret\n",
        data.display()
    );
    if tls {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let ip = host.rsplit_once(':').map_or(host, |(ip, _)| ip);
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=rbuild-test-registry"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-addext"])
            .arg(format!("subjectAltName=IP:{ip}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl (scripts/install-deps installs it)");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        yaml.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ));
    }
    if let Some((user, password)) = credentials {
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("run htpasswd (apache2-utils)");
        assert!(
            out.status.success(),
            "htpasswd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let htpasswd = dir.join("htpasswd");
        std::fs::File::create(&htpasswd)
            .and_then(|mut f| f.write_all(&out.stdout))
            .expect("write htpasswd");
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
            htpasswd.display()
        ));
    }
    let path = dir.join("config.yml");
    std::fs::write(&path, yaml).expect("write registry config");
    path
}
