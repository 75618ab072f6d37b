//! A watchdog process per FUSE mount. The server threads live in the rbuild process itself, so
//! when that process is killed while one of its own threads waits on a request to its own mount,
//! the kernel keeps the connection (the process still holds /dev/fuse) and the process never
//! finishes dying. The watchdog, a forked child running only raw system calls, notices the
//! fatal signal (or the parent's disappearance) and aborts the connection through fusectl,
//! which fails the waiting request so the process exits and the mount becomes plainly dead.

use std::ffi::CString;
use std::io;

/// Where fusectl exposes connections.
const FUSECTL: &str = "/sys/fs/fuse/connections";

/// The running watchdog; dropping it stops it.
#[derive(Debug)]
pub struct Watchdog {
    pid: libc::pid_t,
}

impl Watchdog {
    /// Starts a watchdog for FUSE connection `connection` served by this process.
    pub fn start(connection: u32) -> io::Result<Watchdog> {
        let parent = std::process::id();
        let status = CString::new(format!("/proc/{parent}/status"))?;
        let abort = CString::new(format!("{FUSECTL}/{connection}/abort"))?;
        let fusectl = CString::new(FUSECTL)?;
        let fstype = CString::new("fusectl")?;
        // SAFETY: the child only makes async-signal-safe system calls on memory prepared above
        // and ends with _exit; the parent just records the pid.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above.
            unsafe { watch(&status, &abort, &fusectl, &fstype) }
        }
        Ok(Watchdog { pid })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // SAFETY: plain system calls on the pid of our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Whether the status text shows a pending SIGKILL or a zombie.
fn dying(status: &[u8]) -> bool {
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    let mut dying = false;
    for line in status.split(|&b| b == b'\n') {
        if line.starts_with(b"State:") && line.iter().any(|&b| b == b'Z' || b == b'X') {
            dying = true;
        }
        for key in [&b"SigPnd:"[..], &b"ShdPnd:"[..]] {
            if let Some(rest) = line.strip_prefix(key) {
                let mut value: u64 = 0;
                for &b in rest {
                    let digit = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        _ => continue,
                    };
                    value = value.wrapping_shl(4) | u64::from(digit);
                }
                if value & SIGKILL_BIT != 0 {
                    dying = true;
                }
            }
        }
    }
    dying
}

/// The watchdog's whole life, in the forked child.
unsafe fn watch(status: &CString, abort: &CString, fusectl: &CString, fstype: &CString) -> ! {
    // Hold none of the parent's files (pipes, locks, /dev/fuse).
    libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    let mut buf = [0u8; 4096];
    loop {
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        libc::nanosleep(&pause, std::ptr::null_mut());
        let fd = libc::open(status.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            break;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        if n <= 0 || dying(&buf[..n as usize]) {
            break;
        }
    }
    let mut fd = libc::open(abort.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        libc::mount(
            fstype.as_ptr(),
            fusectl.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        );
        fd = libc::open(abort.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    }
    if fd >= 0 {
        libc::write(fd, b"1".as_ptr().cast(), 1);
        libc::close(fd);
    }
    libc::_exit(0)
}

#[cfg(test)]
mod tests {
    use super::dying;

    #[test]
    fn pending_sigkill_and_zombies_count_as_dying() {
        assert!(dying(
            b"Name:\tx\nState:\tD (disk sleep)\nSigPnd:\t0000000000000100\n"
        ));
        assert!(dying(b"State:\tR (running)\nShdPnd:\t0000000000000100\n"));
        assert!(dying(b"State:\tZ (zombie)\nSigPnd:\t0000000000000000\n"));
        assert!(!dying(
            b"State:\tS (sleeping)\nSigPnd:\t0000000000004000\nShdPnd:\t0000000000000000\n"
        ));
    }
}
