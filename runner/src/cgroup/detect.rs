//! Finding the cgroup hierarchies and this process's place in them.

use super::Version;
use crate::error::{IoContext, Result, RunnerError};
use std::path::PathBuf;

/// The cgroup layout of the host, as seen by this process.
#[derive(Debug, Clone)]
pub enum Hierarchy {
    /// cgroup v1: for each mounted controller hierarchy, its controllers and the directory of
    /// this process's own cgroup in it.
    V1(Vec<(Vec<String>, PathBuf)>),
    /// cgroup v2 only: this process's own cgroup directory.
    V2(PathBuf),
}

impl Hierarchy {
    /// The version.
    pub fn version(&self) -> Version {
        match self {
            Hierarchy::V1(_) => Version::V1,
            Hierarchy::V2(_) => Version::V2,
        }
    }
}

/// Reads /proc/self/mountinfo and /proc/self/cgroup; v1 wins when any v1 controller is mounted
/// (hybrid hosts keep their controllers in v1).
pub fn detect() -> Result<Hierarchy> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").at("/proc/self/mountinfo")?;
    let own = std::fs::read_to_string("/proc/self/cgroup").at("/proc/self/cgroup")?;
    let own_path = |key: &str| -> Option<String> {
        own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            (ctrls == key || (!key.is_empty() && ctrls.split(',').any(|c| c == key)))
                .then(|| path.to_string())
        })
    };
    let mut v1 = Vec::new();
    let mut v2 = None;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (mount_root, mount_point) = (pre[3], pre[4]);
        let join = |own: &str| -> PathBuf {
            let rel = own.strip_prefix(mount_root).unwrap_or(own);
            PathBuf::from(mount_point).join(rel.trim_start_matches('/'))
        };
        match post[0] {
            "cgroup2" => {
                if let Some(p) = own_path("") {
                    v2 = Some(join(&p));
                }
            }
            "cgroup" => {
                let ctrls: Vec<String> = post[2]
                    .split(',')
                    .filter(|o| {
                        matches!(
                            *o,
                            "cpu"
                                | "cpuacct"
                                | "cpuset"
                                | "memory"
                                | "pids"
                                | "blkio"
                                | "freezer"
                                | "devices"
                        )
                    })
                    .map(str::to_string)
                    .collect();
                if let Some(first) = ctrls.first() {
                    if let Some(p) = own_path(first) {
                        v1.push((ctrls, join(&p)));
                    }
                }
            }
            _ => {}
        }
    }
    if !v1.is_empty() {
        return Ok(Hierarchy::V1(v1));
    }
    v2.map(Hierarchy::V2)
        .ok_or_else(|| RunnerError::Unsupported {
            limit: "cgroups".into(),
            reason: "no cgroup hierarchy is mounted; mount cgroup2 on /sys/fs/cgroup".into(),
        })
}
