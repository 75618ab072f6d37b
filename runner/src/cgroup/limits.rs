//! Creating the cgroup directories and writing the limits, per version.

use super::{write, Cgroup, Hierarchy};
use crate::error::{IoContext, Result, RunnerError};
use crate::spec::ResourceLimits;
use std::path::Path;

const CFS_PERIOD_US: u64 = 100_000;

fn unsupported(limit: &str, reason: impl Into<String>) -> RunnerError {
    RunnerError::Unsupported {
        limit: limit.into(),
        reason: reason.into(),
    }
}

fn mkdir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).at(dir),
    }
}

/// Creates the directories of `cg` and applies `limits`.
pub(super) fn create(
    hierarchy: &Hierarchy,
    name: &str,
    limits: &ResourceLimits,
    cg: &mut Cgroup,
) -> Result<()> {
    match hierarchy {
        Hierarchy::V1(hs) => create_v1(hs, name, limits, cg),
        Hierarchy::V2(own) => create_v2(own, name, limits, cg),
    }
}

fn create_v1(
    hs: &[(Vec<String>, std::path::PathBuf)],
    name: &str,
    l: &ResourceLimits,
    cg: &mut Cgroup,
) -> Result<()> {
    let mut wanted: Vec<(&str, Option<&str>)> = vec![
        ("memory", None),
        ("pids", None),
        ("cpu", None),
        ("cpuacct", None),
        ("devices", None),
        ("freezer", None),
    ];
    if l.memory.is_some() {
        wanted[0].1 = Some("--memory");
    }
    if l.pids.is_some() {
        wanted[1].1 = Some("--pids-limit");
    }
    if l.cpus.is_some() || l.cpu_shares.is_some() {
        wanted[2].1 = Some("--cpus/--cpu-shares");
    }
    if l.cpuset_cpus.is_some() {
        wanted.push(("cpuset", Some("--cpuset-cpus")));
    }
    if l.blkio_weight.is_some() {
        wanted.push(("blkio", Some("--blkio-weight")));
    }
    for (ctrl, required_by) in wanted {
        let Some((ctrls, own)) = hs.iter().find(|(c, _)| c.iter().any(|x| x == ctrl)) else {
            if let Some(flag) = required_by {
                return Err(unsupported(
                    flag,
                    format!("the {ctrl} cgroup controller is not mounted on this host"),
                ));
            }
            continue;
        };
        let key = ctrls.join(",");
        if cg.dirs.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let dir = own.join(name);
        mkdir(&dir)?;
        cg.dirs.push((key, dir.clone()));
        if ctrl == "cpuset" {
            // A new v1 cpuset is empty; it needs the parent's memory nodes before tasks can join.
            let mems =
                std::fs::read_to_string(own.join("cpuset.mems")).at(own.join("cpuset.mems"))?;
            write(&dir.join("cpuset.mems"), mems.trim())?;
        }
    }
    let dir = |ctrl: &str| cg.dir_of(ctrl).map(Path::to_path_buf);
    if let Some(d) = dir("devices") {
        restrict_devices_v1(&d)?;
    }
    if let (Some(m), Some(d)) = (l.memory, dir("memory")) {
        write(&d.join("memory.limit_in_bytes"), &m.to_string())?;
        let swap = d.join("memory.memsw.limit_in_bytes");
        if swap.exists() {
            // docker: without --memory-swap, as much swap as memory.
            write(&swap, &m.saturating_mul(2).to_string())?;
        }
    }
    if let (Some(p), Some(d)) = (l.pids, dir("pids")) {
        write(&d.join("pids.max"), &p.to_string())?;
    }
    if let Some(d) = dir("cpu") {
        if let Some(c) = l.cpus {
            let quota = (c * CFS_PERIOD_US as f64).round() as u64;
            let q = d.join("cpu.cfs_quota_us");
            if !q.exists() {
                return Err(unsupported(
                    "--cpus",
                    "the kernel has no CFS bandwidth control",
                ));
            }
            write(&d.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
            write(&q, &quota.max(1000).to_string())?;
        }
        if let Some(s) = l.cpu_shares {
            write(&d.join("cpu.shares"), &s.to_string())?;
        }
    }
    if let (Some(cpus), Some(d)) = (&l.cpuset_cpus, dir("cpuset")) {
        write(&d.join("cpuset.cpus"), cpus)?;
    }
    if let (Some(w), Some(d)) = (l.blkio_weight, dir("blkio")) {
        let file = ["blkio.weight", "blkio.bfq.weight"]
            .iter()
            .map(|f| d.join(f))
            .find(|p| p.exists())
            .ok_or_else(|| {
                unsupported(
                    "--blkio-weight",
                    "this host's blkio controller has no blkio.weight (it needs the BFQ or CFQ \
                     I/O scheduler); leave --blkio-weight unset",
                )
            })?;
        write(&file, &w.to_string())?;
    }
    Ok(())
}

/// Device access docker allows: mknod of any node (its use is what counts), and read/write/mknod
/// of null, zero, full, random, urandom, tty, ptmx and the pty slaves.
pub const ALLOWED_DEVICES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// Denies every device in the v1 devices cgroup `dir`, then allows [`ALLOWED_DEVICES`].
fn restrict_devices_v1(dir: &Path) -> Result<()> {
    write(&dir.join("devices.deny"), "a")?;
    for rule in ALLOWED_DEVICES {
        write(&dir.join("devices.allow"), rule)?;
    }
    Ok(())
}

fn create_v2(own: &Path, name: &str, l: &ResourceLimits, cg: &mut Cgroup) -> Result<()> {
    let available = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    let mut needed: Vec<(&str, &str)> = Vec::new();
    if l.memory.is_some() {
        needed.push(("memory", "--memory"));
    }
    if l.pids.is_some() {
        needed.push(("pids", "--pids-limit"));
    }
    if l.cpus.is_some() || l.cpu_shares.is_some() {
        needed.push(("cpu", "--cpus/--cpu-shares"));
    }
    if l.cpuset_cpus.is_some() {
        needed.push(("cpuset", "--cpuset-cpus"));
    }
    if l.blkio_weight.is_some() {
        needed.push(("io", "--blkio-weight"));
    }
    let subtree = own.join("cgroup.subtree_control");
    for (ctrl, flag) in &needed {
        if !available.split_whitespace().any(|c| c == *ctrl) {
            return Err(unsupported(
                flag,
                format!(
                    "the {ctrl} controller is not available in {}",
                    own.display()
                ),
            ));
        }
        std::fs::write(&subtree, format!("+{ctrl}")).map_err(|e| {
            unsupported(
                flag,
                format!(
                    "cannot enable the {ctrl} controller in {} ({e}); run rbuild from a cgroup \
                     without other processes (e.g. systemd-run --scope)",
                    subtree.display()
                ),
            )
        })?;
    }
    let dir = own.join(name);
    mkdir(&dir)?;
    cg.dirs.push((String::new(), dir.clone()));
    if let Err(e) = super::devices::restrict_devices_v2(&dir) {
        // The rootfs, /dev and the volumes are mounted nodev either way.
        tracing::warn!("no device access control for {}: {e}", dir.display());
    }
    if let Some(m) = l.memory {
        write(&dir.join("memory.max"), &m.to_string())?;
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, &m.to_string())?;
        }
    }
    if let Some(p) = l.pids {
        write(&dir.join("pids.max"), &p.to_string())?;
    }
    if let Some(c) = l.cpus {
        let quota = ((c * CFS_PERIOD_US as f64).round() as u64).max(1000);
        write(&dir.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?;
    }
    if let Some(s) = l.cpu_shares {
        let weight = 1 + (s.clamp(2, 262_144) - 2) * 9999 / 262_142;
        write(&dir.join("cpu.weight"), &weight.to_string())?;
    }
    if let Some(cpus) = &l.cpuset_cpus {
        write(&dir.join("cpuset.cpus"), cpus)?;
    }
    if let Some(w) = l.blkio_weight {
        let file = ["io.weight", "io.bfq.weight"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
            .ok_or_else(|| unsupported("--blkio-weight", "no io.weight file in this cgroup"))?;
        write(&file, &w.to_string())?;
    }
    Ok(())
}
