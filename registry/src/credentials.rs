//! Registry credentials in Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`): `auths` entries and credential helpers (`credsStore`,
//! `credHelpers`), read through the docker_credential crate and written by `login`/`logout`.

use crate::error::{RegistryError, Result};
use crate::reference::DOCKER_HUB;
use base64::Engine;
use docker_credential::{CredentialRetrievalError, DockerCredential};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// User name and password (or personal access token), for basic auth and token requests.
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in config.json).
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// The key Docker uses in `auths` for a registry name (`https://index.docker.io/v1/` for Hub).
pub fn config_key(registry: &str) -> String {
    if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// Docker's client config directory: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn docker_config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".docker")
}

/// Reads and writes credentials in one Docker config file.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    path: PathBuf,
}

impl CredentialStore {
    /// The store at `docker_config_dir()/config.json`.
    pub fn from_env() -> Self {
        CredentialStore {
            path: docker_config_dir().join("config.json"),
        }
    }

    /// A store backed by the given config.json path.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        CredentialStore { path: path.into() }
    }

    /// The config.json path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credentials configured for `registry`, if any (helpers are run as needed).
    pub fn get(&self, registry: &str) -> Result<Option<Credential>> {
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(RegistryError::io(
                    format!("read {}", self.path.display()),
                    e,
                ))
            }
        };
        let key = config_key(registry);
        match docker_credential::get_credential_from_reader(std::io::BufReader::new(file), &key) {
            Ok(DockerCredential::UsernamePassword(username, password)) => {
                Ok(Some(Credential::Basic { username, password }))
            }
            Ok(DockerCredential::IdentityToken(t)) => Ok(Some(Credential::IdentityToken(t))),
            Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(None),
            Err(e) => Err(RegistryError::Credentials {
                registry: registry.to_string(),
                reason: format!("{e:?} (from {})", self.path.display()),
            }),
        }
    }

    fn read_json(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        match std::fs::read(&self.path) {
            Ok(data) if data.iter().all(u8::is_ascii_whitespace) => Ok(Default::default()),
            Ok(data) => serde_json::from_slice(&data).map_err(|e| RegistryError::Config {
                path: self.path.clone(),
                reason: format!("not a JSON object: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
            Err(e) => Err(RegistryError::io(
                format!("read {}", self.path.display()),
                e,
            )),
        }
    }

    fn write_json(&self, map: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let io = |e| RegistryError::io(format!("write {}", self.path.display()), e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(".config.json.{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let body = serde_json::to_vec_pretty(map).map_err(|e| RegistryError::Config {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        f.write_all(&body).and_then(|_| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    fn helper_for(map: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
        map.get("credHelpers")
            .and_then(|h| h.get(key))
            .or_else(|| map.get("credsStore"))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// Saves credentials for `registry`: through its credential helper when one is configured,
    /// else base64 in `auths` (file mode 0600).
    pub fn login(&self, registry: &str, username: &str, password: &str) -> Result<()> {
        let key = config_key(registry);
        let mut map = self.read_json()?;
        if let Some(helper) = Self::helper_for(&map, &key) {
            let input =
                serde_json::json!({"ServerURL": key, "Username": username, "Secret": password});
            return run_helper(&helper, "store", &input.to_string(), registry);
        }
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let auths = map
            .entry("auths")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        let Some(auths) = auths.as_object_mut() else {
            return Err(RegistryError::Config {
                path: self.path.clone(),
                reason: "\"auths\" is not an object".into(),
            });
        };
        auths.insert(key, serde_json::json!({ "auth": auth }));
        self.write_json(&map)
    }

    /// Removes the credentials of `registry`; returns whether there were any.
    pub fn logout(&self, registry: &str) -> Result<bool> {
        let key = config_key(registry);
        let mut map = self.read_json()?;
        let mut removed = false;
        if let Some(auths) = map.get_mut("auths").and_then(|a| a.as_object_mut()) {
            removed = auths.remove(&key).is_some();
        }
        if removed {
            self.write_json(&map)?;
        }
        if let Some(helper) = Self::helper_for(&map, &key) {
            run_helper(&helper, "erase", &key, registry)?;
            removed = true;
        }
        Ok(removed)
    }
}

fn run_helper(helper: &str, action: &str, input: &str, registry: &str) -> Result<()> {
    let program = format!("docker-credential-{helper}");
    let fail = |reason: String| RegistryError::Credentials {
        registry: registry.to_string(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| fail(format!("{program} {action}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("{program} {action}: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{program} {action} failed: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_then_get_then_logout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"other:1":{"auth":"eDp5"}},"psFormat":"x"}"#,
        )
        .unwrap();
        let store = CredentialStore::at(&path);
        assert_eq!(store.get("127.0.0.1:5000").unwrap(), None);
        store.login("127.0.0.1:5000", "alice", "s3:cret").unwrap();
        store.login("docker.io", "bob", "pw").unwrap();
        assert_eq!(
            store.get("127.0.0.1:5000").unwrap(),
            Some(Credential::Basic {
                username: "alice".into(),
                password: "s3:cret".into()
            })
        );
        let raw = std::fs::read_to_string(&path).unwrap();
        assert!(raw.contains("https://index.docker.io/v1/") && raw.contains("psFormat"));
        assert!(store.logout("127.0.0.1:5000").unwrap());
        assert!(!store.logout("127.0.0.1:5000").unwrap());
        assert_eq!(store.get("127.0.0.1:5000").unwrap(), None);
        assert!(store.get("other:1").unwrap().is_some());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
