//! RUN: the command runs in the runner's sandbox on the mounted rootfs; its output is streamed
//! to the progress display as it is written and kept for the error message on failure.

use super::fswrite::{remove_at, split_path, Attrs, RootWriter};
use super::step::RunJob;
use super::{BuildError, Builder};
use crate::dockerfile::Instruction;
use rbuild_runner::{ProcessSpec, SandboxSpec, Stdio};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

/// How many output lines a failed RUN's error shows.
const TAIL_LINES: usize = 20;

impl Builder<'_, '_> {
    /// Runs a prepared RUN in the rootfs mounted at `root`.
    pub(crate) fn run_in(
        &mut self,
        root: &Path,
        instr: &Instruction,
        job: &RunJob,
    ) -> Result<(), BuildError> {
        let err = |m: String| BuildError::Step {
            line: instr.line,
            instruction: instr.original.clone(),
            message: m,
        };
        if let Some((path, content)) = &job.script {
            let w = RootWriter::open(root).map_err(|e| err(e.to_string()))?;
            let (dir, name) = w.parent_of(path).map_err(|e| err(e.to_string()))?;
            let a = Attrs {
                uid: 0,
                gid: 0,
                mode: 0o755,
                mtime: None,
            };
            w.write_file_at(&dir, &name, &mut content.as_bytes(), a)
                .map_err(|e| err(format!("writing the heredoc script: {e}")))?;
        }
        let log_dir = self
            .store
            .scratch_dir("run-log")
            .map_err(|e| BuildError::store("creating a scratch dir", e))?;
        let log_path = log_dir.path().join("output");
        std::fs::File::create(&log_path).map_err(|source| BuildError::Io {
            path: log_path.clone(),
            source,
        })?;
        // Kept until the command has finished: the mounts' sources.
        let (mounts, secret_env, _mount_guards) = self.set_up_run_mounts(&job.mounts, &err)?;
        let sandbox = SandboxSpec {
            rootfs: root.to_path_buf(),
            hostname: "rbuild".into(),
            network: job.network,
            mounts,
            stdio: Stdio::Log(log_path.clone()),
            ..SandboxSpec::default()
        };
        let process = ProcessSpec {
            args: job.argv.clone(),
            env: with_env(&job.env, secret_env),
            cwd: job.cwd.clone(),
            user: job.user.clone(),
        };
        let running = rbuild_runner::spawn(&sandbox, &process)
            .map_err(|e| err(format!("starting the command: {e}")))?;
        let mut log = std::fs::File::open(&log_path).map_err(|source| BuildError::Io {
            path: log_path.clone(),
            source,
        })?;
        let mut tail = TailBuffer::default();
        let status = std::thread::scope(|s| {
            let waiter = s.spawn(move || running.wait());
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let done = waiter.is_finished();
                loop {
                    match log.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            self.reporter.output(&buf[..n]);
                            tail.push(&buf[..n]);
                        }
                    }
                }
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(15));
            }
            waiter.join()
        });
        let _ = log.seek(SeekFrom::End(0));
        let status = match status {
            Ok(r) => r.map_err(|e| err(format!("running the command: {e}")))?,
            Err(_) => return Err(err("the command's waiter thread panicked".into())),
        };
        if let Some((path, _)) = &job.script {
            if let (Ok(w), Some((parent, name))) = (RootWriter::open(root), split_path(path)) {
                if let Ok(dir) = w.ensure_dir(&parent, None) {
                    let _ = remove_at(&dir, &name);
                }
            }
        }
        if status.code != 0 {
            return Err(BuildError::RunFailed {
                line: instr.line,
                instruction: instr.original.clone(),
                code: status.code,
                tail: tail.lines(),
            });
        }
        Ok(())
    }
}

/// `env` with the `NAME=VALUE` entries of `extra` added, each replacing an entry of its name.
fn with_env(env: &[String], extra: Vec<String>) -> Vec<String> {
    let name = |e: &str| e.split('=').next().unwrap_or_default().to_string();
    let mut out: Vec<String> = env
        .iter()
        .filter(|e| !extra.iter().any(|x| name(x) == name(e)))
        .cloned()
        .collect();
    out.extend(extra);
    out
}

/// Keeps the last lines of a stream.
#[derive(Default)]
struct TailBuffer {
    data: Vec<u8>,
}

impl TailBuffer {
    fn push(&mut self, chunk: &[u8]) {
        self.data.extend_from_slice(chunk);
        if self.data.len() > 64 * 1024 {
            let cut = self.data.len() - 32 * 1024;
            self.data.drain(..cut);
        }
    }

    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.data);
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(TAIL_LINES);
        lines[start..].iter().map(|l| l.to_string()).collect()
    }
}
