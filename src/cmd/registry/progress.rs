//! Pull/push progress on the terminal: one bar per blob on a tty, plain lines otherwise.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rbuild_layerfs::Digest;
use rbuild_registry::Progress;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// Shows transfer progress on stderr.
pub enum TermProgress {
    /// Live bars (stderr is a terminal).
    Bars {
        /// The bar set.
        multi: MultiProgress,
        /// One bar per blob.
        bars: Mutex<HashMap<Digest, ProgressBar>>,
        /// Verb for running bars ("Downloading", "Pushing").
        verb: &'static str,
    },
    /// One line per event.
    Plain {
        /// Verb for started blobs.
        verb: &'static str,
    },
}

impl TermProgress {
    /// Bars on a terminal, plain lines otherwise. `verb` names the transfer.
    pub fn new(verb: &'static str) -> Self {
        if std::io::stderr().is_terminal() {
            TermProgress::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: Mutex::new(HashMap::new()),
                verb,
            }
        } else {
            TermProgress::Plain { verb }
        }
    }

    fn line(&self, text: &str) {
        match self {
            TermProgress::Bars { multi, .. } => {
                let _ = multi.println(text);
            }
            TermProgress::Plain { .. } => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }
}

impl Progress for TermProgress {
    fn blob_started(&self, digest: &Digest, size: u64) {
        match self {
            TermProgress::Bars { multi, bars, verb } => {
                // Styled and named before it is added, so its first frame is complete.
                let bar = ProgressBar::new(size)
                    .with_style(
                        ProgressStyle::with_template(
                            "{prefix}: {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    )
                    .with_prefix(digest.short().to_string())
                    .with_message(*verb);
                let bar = multi.add(bar);
                bars.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(digest.clone(), bar);
            }
            TermProgress::Plain { verb } => {
                self.line(&format!("{}: {verb} ({size} bytes)", digest.short()))
            }
        }
    }

    fn blob_advanced(&self, digest: &Digest, bytes: u64) {
        if let TermProgress::Bars { bars, .. } = self {
            if let Some(bar) = bars.lock().unwrap_or_else(|p| p.into_inner()).get(digest) {
                bar.inc(bytes);
            }
        }
    }

    fn blob_done(&self, digest: &Digest, status: &str) {
        if let TermProgress::Bars { bars, .. } = self {
            if let Some(bar) = bars
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(digest)
            {
                bar.finish_and_clear();
            }
        }
        self.line(&format!("{}: {status}", digest.short()));
    }

    fn message(&self, text: &str) {
        self.line(text);
    }
}
