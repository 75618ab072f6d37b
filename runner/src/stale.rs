//! Temporary directories named after the process that made them (`<prefix><pid>-…`), left
//! behind when that process was killed (SIGKILL runs no destructor).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Removes the directories in `base` named `<prefix><pid>-…` whose process is dead and which
/// belong to this user; a live (or reused) pid's are left alone.
pub fn remove_dirs_of_dead_processes(base: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        let dead = matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        );
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if dead && ours {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
