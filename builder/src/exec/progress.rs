//! Build progress events, and the build log that keeps every one of them in the store.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Receives what the build is doing; the CLI renders it.
pub trait Progress {
    /// Step `n` of `total` starts (`text` is the instruction as written).
    fn step(&mut self, n: usize, total: usize, text: &str);
    /// The step was a cache hit.
    fn cached(&mut self);
    /// The step finished after `elapsed`.
    fn finished(&mut self, elapsed: Duration);
    /// Output of a RUN step, as it arrives (never clipped).
    fn output(&mut self, data: &[u8]);
    /// An informational line.
    fn note(&mut self, text: &str);
}

/// A [`Progress`] that shows nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn step(&mut self, _: usize, _: usize, _: &str) {}
    fn cached(&mut self) {}
    fn finished(&mut self, _: Duration) {}
    fn output(&mut self, _: &[u8]) {}
    fn note(&mut self, _: &str) {}
}

/// Forwards events to the caller's [`Progress`] and appends them to the build log file.
pub struct Reporter<'a> {
    inner: &'a mut dyn Progress,
    log: Option<File>,
    log_path: Option<PathBuf>,
}

impl std::fmt::Debug for Reporter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("log", &self.log_path)
            .finish()
    }
}

impl<'a> Reporter<'a> {
    /// A reporter that also writes the build log at `log_path` (when it can be created).
    pub fn new(inner: &'a mut dyn Progress, log_path: Option<&Path>) -> Reporter<'a> {
        let log = log_path.and_then(|p| {
            if let Some(dir) = p.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            File::create(p).ok()
        });
        Reporter {
            inner,
            log_path: log.as_ref().and(log_path.map(Path::to_path_buf)),
            log,
        }
    }

    /// Where the build log is kept.
    pub fn log_path(&self) -> Option<&Path> {
        self.log_path.as_deref()
    }

    fn log(&mut self, data: &[u8]) {
        if let Some(f) = &mut self.log {
            let _ = f.write_all(data);
        }
    }

    /// See [`Progress::step`].
    pub fn step(&mut self, n: usize, total: usize, text: &str) {
        self.log(format!("STEP {n}/{total}: {text}\n").as_bytes());
        self.inner.step(n, total, text);
    }
    /// See [`Progress::cached`].
    pub fn cached(&mut self) {
        self.log(b"--> CACHED\n");
        self.inner.cached();
    }
    /// See [`Progress::finished`].
    pub fn finished(&mut self, elapsed: Duration) {
        self.log(format!("--> done in {:.3}s\n", elapsed.as_secs_f64()).as_bytes());
        self.inner.finished(elapsed);
    }
    /// See [`Progress::output`].
    pub fn output(&mut self, data: &[u8]) {
        self.log(data);
        self.inner.output(data);
    }
    /// A line for the build log only (not shown), e.g. which layers were mounted.
    pub fn log_only(&mut self, text: &str) {
        self.log(format!("{text}\n").as_bytes());
    }

    /// See [`Progress::note`].
    pub fn note(&mut self, text: &str) {
        self.log(format!("{text}\n").as_bytes());
        self.inner.note(text);
    }
}
