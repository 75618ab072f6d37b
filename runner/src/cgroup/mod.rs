//! cgroups v1 and v2: created only below the invoking process's own cgroup, used to limit,
//! measure and kill a sandbox as a whole, and removed afterwards.

mod detect;
pub mod devices;
mod limits;

pub use detect::{detect, Hierarchy};

use crate::error::{IoContext, Result, RunnerError};
use crate::spec::ResourceLimits;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which cgroup version a [`Cgroup`] lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    /// Legacy per-controller hierarchies (possibly beside an empty unified one: "hybrid").
    V1,
    /// The unified hierarchy.
    V2,
}

/// A created cgroup: one directory per v1 controller hierarchy, or one v2 directory. Serialisable
/// so another process (e.g. `rbuild stats`) can reopen it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// cgroup version.
    pub version: Version,
    /// (controllers, directory) pairs; for v2 a single pair with controllers "".
    pub dirs: Vec<(String, PathBuf)>,
}

/// Resource usage read from a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// CPU time used, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// Memory limit in bytes (None when unlimited).
    pub memory_limit: Option<u64>,
    /// Number of tasks.
    pub pids: u64,
}

/// A frozen cgroup ([`Cgroup::freeze`]); thawed on drop.
#[derive(Debug)]
pub struct Frozen<'a> {
    cgroup: &'a Cgroup,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.cgroup.thaw();
    }
}

pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).at(path)
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Cgroup {
    /// Creates cgroup `name` below this process's own cgroup(s) and applies `limits`; a limit the
    /// host cannot enforce is an error (and nothing is left behind).
    pub fn create(name: &str, limits: &ResourceLimits) -> Result<Cgroup> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(RunnerError::Invalid(format!(
                "invalid cgroup name {name:?}"
            )));
        }
        let hierarchy = detect()?;
        let mut cg = Cgroup {
            version: hierarchy.version(),
            dirs: Vec::new(),
        };
        match limits::create(&hierarchy, name, limits, &mut cg) {
            Ok(()) => Ok(cg),
            Err(e) => {
                let _ = cg.destroy();
                Err(e)
            }
        }
    }

    /// The directory holding `controller`'s files (v2: the one directory).
    pub fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| self.version == Version::V2 || c.split(',').any(|x| x == controller))
            .map(|(_, d)| d.as_path())
    }

    /// Moves process `pid` (0 = the caller) into every directory of this cgroup.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        let pid = if pid == 0 {
            std::process::id() as i32
        } else {
            pid
        };
        for (_, dir) in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Process ids currently in the cgroup (host pid namespace).
    pub fn pids(&self) -> Vec<i32> {
        let mut all: Vec<i32> = Vec::new();
        for (_, dir) in &self.dirs {
            if let Some(s) = read(&dir.join("cgroup.procs")) {
                for p in s.lines().filter_map(|l| l.trim().parse().ok()) {
                    if !all.contains(&p) {
                        all.push(p);
                    }
                }
            }
        }
        all
    }

    /// True when the kernel OOM-killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        let Some(s) = self.dir_of("memory").and_then(|d| read(&d.join(file))) else {
            return false;
        };
        s.lines().any(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        })
    }

    /// Reads CPU time, memory and pid counts.
    pub fn stats(&self) -> Stats {
        let num = |ctrl: &str, file: &str| -> Option<u64> {
            read(&self.dir_of(ctrl)?.join(file))?.trim().parse().ok()
        };
        match self.version {
            Version::V1 => Stats {
                cpu_ns: num("cpuacct", "cpuacct.usage").unwrap_or(0),
                memory_bytes: num("memory", "memory.usage_in_bytes").unwrap_or(0),
                memory_limit: num("memory", "memory.limit_in_bytes").filter(|l| *l < (1u64 << 62)),
                pids: num("pids", "pids.current").unwrap_or(self.pids().len() as u64),
            },
            Version::V2 => Stats {
                cpu_ns: self
                    .dir_of("cpu")
                    .and_then(|d| read(&d.join("cpu.stat")))
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("usage_usec "))
                            .and_then(|v| v.trim().parse::<u64>().ok())
                    })
                    .map(|us| us * 1000)
                    .unwrap_or(0),
                memory_bytes: num("memory", "memory.current").unwrap_or(0),
                memory_limit: num("memory", "memory.max"),
                pids: num("pids", "pids.current").unwrap_or(self.pids().len() as u64),
            },
        }
    }

    /// Sends `signal` to every process in the cgroup.
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// The file that freezes this cgroup (v1 `freezer.state`, v2 `cgroup.freeze`), if any.
    fn freeze_file(&self) -> Option<PathBuf> {
        match self.version {
            Version::V1 => Some(self.dir_of("freezer")?.join("freezer.state")),
            Version::V2 => Some(self.dir_of("")?.join("cgroup.freeze")),
        }
    }

    /// True when every process of the cgroup is frozen.
    fn is_frozen(&self) -> bool {
        match self.version {
            Version::V1 => self
                .freeze_file()
                .and_then(|f| read(&f))
                .is_some_and(|s| s.trim() == "FROZEN"),
            Version::V2 => self
                .dir_of("")
                .and_then(|d| read(&d.join("cgroup.events")))
                .is_some_and(|s| s.lines().any(|l| l.trim() == "frozen 1")),
        }
    }

    /// Freezes every process of the cgroup and waits until they are; the returned guard thaws
    /// them when dropped. An error when this cgroup has no freezer (v1 without the freezer
    /// controller, or a cgroup created before it was used).
    pub fn freeze(&self) -> Result<Frozen<'_>> {
        let file =
            self.freeze_file()
                .filter(|f| f.exists())
                .ok_or_else(|| RunnerError::Unsupported {
                    limit: "freezing the container".into(),
                    reason: "its cgroup has no freezer".into(),
                })?;
        let value = match self.version {
            Version::V1 => "FROZEN",
            Version::V2 => "1",
        };
        let guard = Frozen { cgroup: self };
        write(&file, value)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.is_frozen() {
            if Instant::now() > deadline {
                return Err(RunnerError::Setup(format!(
                    "the processes of {} did not freeze within 10s",
                    file.display()
                )));
            }
            if self.version == Version::V1 {
                // v1 retries a FREEZING cgroup only when asked again.
                write(&file, value)?;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(guard)
    }

    /// Thaws the cgroup (no-op when it has no freezer).
    pub fn thaw(&self) {
        if let Some(f) = self.freeze_file().filter(|f| f.exists()) {
            let value = match self.version {
                Version::V1 => "THAWED",
                Version::V2 => "0",
            };
            let _ = std::fs::write(f, value);
        }
    }

    /// Kills every remaining process and removes the directories. Safe to call twice.
    pub fn destroy(&self) -> Result<()> {
        // Frozen processes would not die of SIGKILL before they are thawed.
        self.thaw();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.version == Version::V2 {
                if let Some(d) = self.dir_of("") {
                    let _ = std::fs::write(d.join("cgroup.kill"), "1");
                }
            }
            self.signal_all(nix::sys::signal::Signal::SIGKILL);
            let mut busy = None;
            for (_, dir) in self.dirs.iter().rev() {
                match std::fs::remove_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => busy = Some((dir.clone(), e)),
                }
            }
            match busy {
                None => return Ok(()),
                Some((dir, e)) if Instant::now() > deadline => {
                    return Err(e).at(dir);
                }
                Some(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// Removes the cgroups that sandboxes of dead processes left below this process's own
/// cgroup(s): those named `<prefix><pid>-<n>` (the default sandbox name) whose `pid` no longer
/// runs, as a killed rbuild leaves them (it removes its sandboxes' cgroups itself otherwise).
/// A cgroup that still holds processes is kept (rmdir refuses it). Returns how many
/// directories were removed.
pub fn remove_orphaned(prefix: &str) -> usize {
    let parents: Vec<PathBuf> = match detect() {
        Ok(Hierarchy::V1(hierarchies)) => hierarchies.into_iter().map(|(_, d)| d).collect(),
        Ok(Hierarchy::V2(own)) => vec![own],
        Err(_) => return 0,
    };
    let mut removed = 0;
    for parent in parents {
        for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|rest| rest.split_once('-'))
                .filter(|(pid, seq)| is_number(pid) && is_number(seq))
                .map(|(pid, _)| pid)
            else {
                continue;
            };
            if Path::new("/proc").join(pid).exists() {
                continue;
            }
            if std::fs::remove_dir(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}
