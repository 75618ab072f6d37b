//! The system calls the sandbox sequence needs, behind a trait (youki's pattern) so the sequence
//! can be unit-tested without root; [`LinuxSyscall`] is the real implementation.

use crate::error::{Result, SysContext};
use crate::resolve::{self, Kind};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `MOUNT_ATTR_RDONLY`: read-only.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_NOSUID`: setuid bits and file capabilities ignored.
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// `MOUNT_ATTR_NODEV`: device nodes cannot be opened.
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
/// `MOUNT_ATTR_NOEXEC`: nothing can be executed.
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const AT_RECURSIVE: libc::c_uint = 0x8000;

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
    /// mount_setattr(2): sets `attrs` (`MOUNT_ATTR_*`) on the mount at `target`, and on every
    /// mount below it when `recursive`.
    fn mount_setattr(&self, target: &Path, attrs: u64, recursive: bool) -> Result<()>;
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

    fn mount_setattr(&self, target: &Path, attrs: u64, recursive: bool) -> Result<()> {
        #[repr(C)]
        struct MountAttr {
            attr_set: u64,
            attr_clr: u64,
            propagation: u64,
            userns_fd: u64,
        }
        let attr = MountAttr {
            attr_set: attrs,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        let path = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|_| crate::error::RunnerError::Invalid(format!("{target:?}: NUL in path")))?;
        let flags: libc::c_uint = if recursive { AT_RECURSIVE } else { 0 };
        // SAFETY: mount_setattr with a NUL-terminated path and a mount_attr of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                path.as_ptr(),
                flags,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if r != 0 {
            return Err(nix::Error::last())
                .sys(|| format!("mount_setattr {attrs:#x} on {}", target.display()));
        }
        Ok(())
    }

    fn target(&self, root: &Path, rel: &str, kind: Kind) -> Result<Target> {
        let root_fd = resolve::open_root(root)?;
        let fd = resolve::open_in_root(&root_fd, rel, kind, &mut resolve::Created::default())?;
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
        let dir = resolve::open_in_root(
            &root_fd,
            &parent,
            Kind::Existing,
            &mut resolve::Created::default(),
        )?;
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
    fn mount_setattr(&self, target: &Path, attrs: u64, recursive: bool) -> Result<()> {
        self.push(format!(
            "mount_setattr {} {attrs:#x}{}",
            target.display(),
            if recursive { " recursive" } else { "" }
        ));
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
