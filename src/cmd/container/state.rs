//! Container records: containers/<id>/{upper,work,merged,state.json,log} in the store.

use anyhow::{bail, Context};
use rbuild_runner::{BindMount, Cgroup, ResourceLimits};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a container is configured (fixed at creation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// argv (entrypoint + cmd, resolved).
    pub args: Vec<String>,
    /// The image's ENTRYPOINT part of `args` (for display).
    pub entrypoint: Vec<String>,
    /// Complete environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// user[:group].
    pub user: String,
    /// Hostname.
    pub hostname: String,
    /// "none", "private" or "host".
    pub network: String,
    /// Bind mounts.
    pub mounts: Vec<MountConfig>,
    /// Read-only rootfs.
    pub readonly: bool,
    /// Allocate a pty.
    pub tty: bool,
    /// Keep stdin open.
    pub interactive: bool,
    /// Remove when it exits.
    pub auto_remove: bool,
    /// cgroup limits.
    pub limits: LimitsConfig,
}

/// A `-v` mount.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountConfig {
    /// Host path.
    pub source: PathBuf,
    /// Container path.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
}

impl From<&MountConfig> for BindMount {
    fn from(m: &MountConfig) -> BindMount {
        BindMount {
            source: m.source.clone(),
            target: m.target.clone(),
            readonly: m.readonly,
        }
    }
}

/// cgroup limits as recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LimitsConfig {
    /// Bytes.
    pub memory: Option<u64>,
    /// CPUs.
    pub cpus: Option<f64>,
    /// Shares.
    pub cpu_shares: Option<u64>,
    /// cpuset.
    pub cpuset_cpus: Option<String>,
    /// Max tasks.
    pub pids: Option<u64>,
    /// blkio weight.
    pub blkio_weight: Option<u16>,
}

impl From<&LimitsConfig> for ResourceLimits {
    fn from(l: &LimitsConfig) -> ResourceLimits {
        ResourceLimits {
            memory: l.memory,
            cpus: l.cpus,
            cpu_shares: l.cpu_shares,
            cpuset_cpus: l.cpuset_cpus.clone(),
            pids: l.pids,
            blkio_weight: l.blkio_weight,
        }
    }
}

/// Lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    Created,
    /// Running (a monitor process waits for it).
    Running,
    /// Exited.
    Exited,
}

impl Status {
    /// Docker's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

/// The whole record, stored as state.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    /// 64 hex digits.
    pub id: String,
    /// Name.
    pub name: String,
    /// Image as given on the command line.
    pub image: String,
    /// Image ID (config digest).
    pub image_id: String,
    /// Manifest digest.
    pub manifest: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Configuration.
    pub config: ContainerConfig,
    /// Status.
    pub status: Status,
    /// Host pid of the container's pid 1 while running.
    pub pid: i32,
    /// Pid of the rbuild process waiting for it.
    pub monitor_pid: i32,
    /// Exit code once exited.
    pub exit_code: Option<i32>,
    /// The OOM killer struck.
    pub oom_killed: bool,
    /// Start time (RFC 3339).
    pub started_at: Option<String>,
    /// End time (RFC 3339).
    pub finished_at: Option<String>,
    /// The cgroup while running.
    pub cgroup: Option<Cgroup>,
    /// Storage driver of the root filesystem mount.
    pub driver: String,
    /// Start error, if the last start failed.
    pub error: Option<String>,
    /// The process serving the root filesystem when it is a FUSE mount of a detached
    /// container (it outlives the monitor; `stop` and `rm` end it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuse_server_pid: Option<u32>,
}

/// Directory holding all containers.
pub fn containers_dir(store_root: &Path) -> PathBuf {
    store_root.join("containers")
}

impl ContainerState {
    /// containers/<id>.
    pub fn dir(&self, store_root: &Path) -> PathBuf {
        containers_dir(store_root).join(&self.id)
    }

    /// Short (12 hex) ID.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// Writes state.json atomically.
    pub fn save(&self, store_root: &Path) -> anyhow::Result<()> {
        let dir = self.dir(store_root);
        let tmp = dir.join(format!(".state.json.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join("state.json"))
            .with_context(|| format!("writing {}", dir.join("state.json").display()))?;
        Ok(())
    }

    /// Reads containers/<id>/state.json.
    pub fn load(dir: &Path) -> anyhow::Result<ContainerState> {
        let path = dir.join("state.json");
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))
    }

    /// Re-reads this container's record.
    pub fn reload(&self, store_root: &Path) -> anyhow::Result<ContainerState> {
        ContainerState::load(&self.dir(store_root))
    }

    /// True when the recorded process still exists (and the record says running).
    pub fn is_running(&self) -> bool {
        self.status == Status::Running && self.pid > 0 && pid_alive(self.pid)
    }

    /// The status to show: a "running" record whose process is gone counts as exited.
    pub fn effective_status(&self) -> Status {
        if self.status == Status::Running && !self.is_running() {
            Status::Exited
        } else {
            self.status
        }
    }
}

/// kill(pid, 0) succeeds and the process is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(true)
        })
        .unwrap_or(false)
}

/// Every container record, newest first.
pub fn list(store_root: &Path) -> anyhow::Result<Vec<ContainerState>> {
    let dir = containers_dir(store_root);
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        if let Ok(s) = ContainerState::load(&e.path()) {
            out.push(s);
        }
    }
    out.sort_by(|a, b| b.created.cmp(&a.created));
    Ok(out)
}

/// Finds a container by name, full ID or unique ID prefix.
pub fn find(store_root: &Path, key: &str) -> anyhow::Result<ContainerState> {
    let all = list(store_root)?;
    if let Some(c) = all.iter().find(|c| c.name == key || c.id == key) {
        return Ok(c.clone());
    }
    let matches: Vec<&ContainerState> = all.iter().filter(|c| c.id.starts_with(key)).collect();
    match matches.as_slice() {
        [one] if !key.is_empty() => Ok((*one).clone()),
        [] | [_] => bail!("no such container: {key}"),
        _ => bail!("container ID prefix {key} is ambiguous; give more characters or the name"),
    }
}

/// A fresh random 64-hex ID.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    if b == [0u8; 32] {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b[..16].copy_from_slice(&t.to_le_bytes());
        b[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// RFC 3339 "now".
pub fn now() -> String {
    rbuild_layerfs::image::rfc3339(std::time::SystemTime::now())
}
