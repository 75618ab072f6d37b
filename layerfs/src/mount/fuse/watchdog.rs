//! A watchdog process per FUSE mount. The server threads live in the rbuild process itself, so
//! when that process is killed while one of its own threads waits on a request to its own mount,
//! the kernel keeps the connection (the process still holds /dev/fuse) and the process never
//! finishes dying. The watchdog, a forked child running only raw system calls, notices the
//! fatal signal (or the parent's disappearance) and aborts the connection through an
//! [`AbortHandle`] opened while the mount was ours, which fails the waiting request so the
//! process exits and the mount becomes plainly dead. Aborting by connection number instead
//! would hit whichever mount has the number by then: the number is reused as soon as the dead
//! mount is swept away, typically by the next build's own mount.

use std::ffi::CString;
use std::io;

use super::control::AbortHandle;

/// The running watchdog; dropping it stops it.
#[derive(Debug)]
pub struct Watchdog {
    pid: libc::pid_t,
    /// Kept open for as long as the watchdog runs (the watchdog has its own copy).
    _abort: AbortHandle,
}

impl Watchdog {
    /// Starts a watchdog that aborts the connection of `abort` once this process dies or is
    /// dying. Start it before the mount is served: from then on a kill cannot leave this
    /// process stuck on its own mount.
    pub fn start(abort: AbortHandle) -> io::Result<Watchdog> {
        let parent = std::process::id();
        let status = CString::new(format!("/proc/{parent}/status"))?;
        let abort_fd = abort.as_raw_fd();
        // SAFETY: the child only makes async-signal-safe system calls on memory prepared above
        // and ends with _exit; the parent just records the pid.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above.
            unsafe { watch(&status, abort_fd) }
        }
        Ok(Watchdog { pid, _abort: abort })
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

/// The watchdog's whole life, in the forked child: waits for the parent to die (or to be
/// dying), then writes to the abort file `abort_fd`.
unsafe fn watch(status: &CString, abort_fd: libc::c_int) -> ! {
    // Hold none of the parent's files (pipes, locks, /dev/fuse) but the abort file.
    let abort_fd = abort_fd as libc::c_uint;
    if abort_fd > 3 {
        libc::syscall(libc::SYS_close_range, 3u32, abort_fd - 1, 0u32);
    }
    libc::syscall(libc::SYS_close_range, abort_fd + 1, u32::MAX, 0u32);
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
    // Does nothing when the connection has already ended (see control::AbortHandle).
    libc::write(abort_fd as libc::c_int, b"1".as_ptr().cast(), 1);
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
