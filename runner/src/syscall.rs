//! The system calls the sandbox sequence needs, behind a trait (youki's pattern) so the sequence
//! can be unit-tested without root; [`LinuxSyscall`] is the real implementation.

use crate::error::{Result, SysContext};
use crate::resolve::{self, Kind};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A resolved mount target: a path (usually `/proc/self/fd/N`) valid while this value lives.
#[derive(Debug)]
pub struct Target {
    /// Path to pass to mount(2).
    pub path: PathBuf,
    /// Keeps the O_PATH descriptor behind `path` open.
    _fd: Option<OwnedFd>,
}

impl Target {
    /// A target that is a plain path (used by test doubles).
    pub fn plain(path: impl Into<PathBuf>) -> Target {
        Target {
            path: path.into(),
            _fd: None,
        }
    }
}

/// The kernel operations of the sandbox sequence.
pub trait Syscall {
    /// unshare(2).
    fn unshare(&self, flags: CloneFlags) -> Result<()>;
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    /// umount2(2).
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> Result<()>;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> Result<()>;
    /// Resolves `rel` inside `root` without leaving it (symlinks included), creating it as
    /// `kind` says when missing; the result can be used as a mount target.
    fn target(&self, root: &Path, rel: &str, kind: Kind) -> Result<Target>;
    /// Creates the symlink `root/rel -> dest`, with `rel`'s parent resolved inside `root`.
    fn symlink(&self, root: &Path, rel: &str, dest: &str) -> Result<()>;
}

/// The real system calls.
#[derive(Debug, Default)]
pub struct LinuxSyscall;

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

impl Syscall for LinuxSyscall {
    fn unshare(&self, flags: CloneFlags) -> Result<()> {
        nix::sched::unshare(flags).sys(|| format!("unshare({flags:?})"))
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).sys(|| {
            format!(
                "mount {} ({}) on {}",
                source.map(|s| s.display().to_string()).unwrap_or_default(),
                fstype.unwrap_or("bind/remount"),
                target.display()
            )
        })
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()> {
        nix::mount::umount2(target, flags).sys(|| format!("umount {}", target.display()))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
            .sys(|| format!("pivot_root into {}", new_root.display()))
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        nix::unistd::chdir(path).sys(|| format!("chdir {}", path.display()))
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        nix::unistd::sethostname(name).sys(|| format!("sethostname {name:?}"))
    }

    fn target(&self, root: &Path, rel: &str, kind: Kind) -> Result<Target> {
        let root_fd = resolve::open_root(root)?;
        let fd = resolve::open_in_root(&root_fd, rel, kind, &mut Vec::new())?;
        Ok(Target {
            path: fd_path(&fd),
            _fd: Some(fd),
        })
    }

    fn symlink(&self, root: &Path, rel: &str, dest: &str) -> Result<()> {
        let relp = resolve::relative(rel);
        let parent = relp
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = relp.file_name().unwrap_or_default();
        let root_fd = resolve::open_root(root)?;
        let dir = resolve::open_in_root(&root_fd, &parent, Kind::Existing, &mut Vec::new())?;
        match rustix::fs::symlinkat(dest, &dir, name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(e).sys(|| format!("symlink {rel} -> {dest}")),
        }
    }
}

/// A test double that records every call instead of making it.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    /// One line per call, in order.
    pub calls: std::cell::RefCell<Vec<String>>,
}

#[cfg(test)]
impl RecordingSyscall {
    fn push(&self, s: String) {
        self.calls.borrow_mut().push(s);
    }
}

#[cfg(test)]
impl Syscall for RecordingSyscall {
    fn unshare(&self, flags: CloneFlags) -> Result<()> {
        self.push(format!("unshare {flags:?}"));
        Ok(())
    }
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        self.push(format!(
            "mount {} {} {} {} {}",
            source
                .map(|s| s.display().to_string())
                .unwrap_or("-".into()),
            target.display(),
            fstype.unwrap_or("-"),
            format!("{flags:?}")
                .trim_start_matches("MsFlags(")
                .trim_end_matches(')'),
            data.unwrap_or("-")
        ));
        Ok(())
    }
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()> {
        self.push(format!("umount2 {} {flags:?}", target.display()));
        Ok(())
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()> {
        self.push(format!(
            "pivot_root {} {}",
            new_root.display(),
            put_old.display()
        ));
        Ok(())
    }
    fn chdir(&self, path: &Path) -> Result<()> {
        self.push(format!("chdir {}", path.display()));
        Ok(())
    }
    fn sethostname(&self, name: &str) -> Result<()> {
        self.push(format!("sethostname {name}"));
        Ok(())
    }
    fn target(&self, root: &Path, rel: &str, _kind: Kind) -> Result<Target> {
        Ok(Target::plain(root.join(resolve::relative(rel))))
    }
    fn symlink(&self, root: &Path, rel: &str, dest: &str) -> Result<()> {
        self.push(format!(
            "symlink {} -> {dest}",
            root.join(resolve::relative(rel)).display()
        ));
        Ok(())
    }
}
