//! [`crate::Stdio::Tee`]: the process's stdout and stderr are pipes whose contents the caller
//! copies to its own stdout and stderr and appends to a log file.
//!
//! One thread per stream does blocking reads and writes, so a stream is never reordered, output
//! is never buffered beyond one chunk (the process blocks on its full pipe while the caller's
//! side is slow: backpressure), and the thread waiting for the process keeps forwarding signals
//! whatever the caller's stdout does. The threads read to end of file, which comes once every
//! process holding a write end is gone: all of them are in the sandbox's pid namespace, so that
//! is when its first process has been reaped, and nothing written before the exit is lost. (For
//! a process exec'd into a running sandbox, the end comes when every process that inherited its
//! pipes is gone, which may be after the process itself.)

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::thread::JoinHandle;

/// Size of the chunk a copier reads and writes at once (a pipe's default capacity).
const CHUNK: usize = 64 * 1024;

/// The caller's ends of the output pipes, and the log.
#[derive(Debug)]
pub struct TeePipes {
    /// Read end of the process's stdout.
    pub stdout: OwnedFd,
    /// Read end of the process's stderr.
    pub stderr: OwnedFd,
    /// The log (opened for appending).
    pub log: File,
}

/// The running copier threads of a [`TeePipes`].
#[derive(Debug)]
pub struct Copiers(Vec<JoinHandle<()>>);

impl TeePipes {
    /// Starts one copier per stream: stdout to fd 1, stderr to fd 2, both to the log. The
    /// threads inherit the calling thread's signal mask: call it with the forwarded signals
    /// blocked, so none of them is delivered to a copier.
    pub fn start(self) -> std::io::Result<Copiers> {
        let TeePipes {
            stdout,
            stderr,
            log,
        } = self;
        let log2 = log.try_clone()?;
        let mut threads = Vec::with_capacity(2);
        for (from, to, log) in [(stdout, 1, log), (stderr, 2, log2)] {
            let name = if to == 1 { "tee-stdout" } else { "tee-stderr" };
            threads.push(
                std::thread::Builder::new()
                    .name(name.into())
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        // SAFETY: fds 1 and 2 stay open for the life of the process.
                        let to = unsafe { BorrowedFd::borrow_raw(to) };
                        copy_stream(from, to, &log);
                    })?,
            );
        }
        Ok(Copiers(threads))
    }
}

impl Copiers {
    /// Waits until both streams reached their end (the process and everything that shared its
    /// output are gone) and everything read was written.
    pub fn finish(self) {
        for t in self.0 {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` and appends it to `log` until end of file. When writing to `to`
/// fails (its reader is gone), `from` is closed, so the writer of the pipe sees EPIPE/SIGPIPE
/// on its next write as it would writing to `to` itself. A log that cannot be written (disk
/// full) is given up on; the output still reaches `to`.
pub fn copy_stream(from: OwnedFd, to: BorrowedFd<'_>, log: &File) {
    let mut buf = vec![0u8; CHUNK];
    let mut log_ok = true;
    loop {
        let n = match nix::unistd::read(from.as_fd(), &mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return,
        };
        // The log first: it keeps the chunk even while the caller's side blocks.
        if log_ok {
            log_ok = (&*log).write_all(&buf[..n]).is_ok();
        }
        if write_all(to, &buf[..n]).is_err() {
            return;
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    #[test]
    fn copies_everything_to_both_sides_in_order() {
        let data: Vec<u8> = (0..6u32 << 20).map(|i| (i % 251) as u8).collect();
        let (src_r, src_w) = pipe();
        let (dst_r, dst_w) = pipe();
        let log = tempfile::tempfile().unwrap();
        let writer = {
            let data = data.clone();
            std::thread::spawn(move || {
                // Odd-sized writes, closed right after the last one.
                for chunk in data.chunks(10_007) {
                    write_all(src_w.as_fd(), chunk).unwrap();
                }
            })
        };
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            File::from(dst_r).read_to_end(&mut got).unwrap();
            got
        });
        copy_stream(src_r, dst_w.as_fd(), &log);
        drop(dst_w);
        writer.join().unwrap();
        assert!(reader.join().unwrap() == data, "the destination differs");
        let mut logged = Vec::new();
        let mut log = log;
        std::io::Seek::rewind(&mut log).unwrap();
        log.read_to_end(&mut logged).unwrap();
        assert!(logged == data, "the log differs");
    }

    #[test]
    fn a_closed_destination_closes_the_source() {
        let (src_r, src_w) = pipe();
        let (dst_r, dst_w) = pipe();
        drop(dst_r);
        let log = tempfile::tempfile().unwrap();
        write_all(src_w.as_fd(), b"lost\n").unwrap();
        // The copier returns (and drops the source's read end) on EPIPE; Rust's runtime
        // ignores SIGPIPE in tests as in the binary.
        copy_stream(src_r, dst_w.as_fd(), &log);
        assert_eq!(
            nix::unistd::write(src_w.as_fd(), b"more"),
            Err(nix::Error::EPIPE)
        );
        let mut logged = String::new();
        let mut log = log;
        std::io::Seek::rewind(&mut log).unwrap();
        log.read_to_string(&mut logged).unwrap();
        assert_eq!(logged, "lost\n");
    }
}
