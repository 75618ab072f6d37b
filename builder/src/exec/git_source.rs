//! `ADD` of a git repository, as BuildKit: `https://host/repo.git#REF:SUBDIR`, `git://…` or
//! `git@host:repo.git`. REF (a branch, tag or commit; default the remote HEAD) is resolved to a
//! commit with `git ls-remote` when the step is prepared, so the commit is the cache key and a
//! moved branch misses. The commit is then fetched shallowly into a scratch dir and its tree
//! (or SUBDIR of it) copied like a context directory, without `.git` unless `--keep-git-dir`.

use std::path::Path;
use std::process::{Command, Stdio};

/// A parsed git source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GitSource {
    /// The repository URL, without the fragment.
    pub url: String,
    /// The branch, tag or commit asked for; `None` for the remote HEAD.
    pub reference: Option<String>,
    /// The directory of the repository to copy (`""` for all of it).
    pub subdir: String,
}

impl GitSource {
    /// Splits `URL#REF:SUBDIR`.
    pub(crate) fn parse(source: &str) -> GitSource {
        let (url, fragment) = source.split_once('#').unwrap_or((source, ""));
        let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
        GitSource {
            url: url.to_string(),
            reference: (!reference.is_empty()).then(|| reference.to_string()),
            subdir: subdir.trim_matches('/').to_string(),
        }
    }

    /// The commit the reference names now, from `git ls-remote`.
    pub(crate) fn resolve(&self) -> Result<String, String> {
        if let Some(r) = &self.reference {
            if is_commit(r) {
                return Ok(r.to_ascii_lowercase());
            }
        }
        let out = git(None, &["ls-remote", "--", &self.url])?;
        let refs: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('\t')).collect();
        let wanted: Vec<String> = match &self.reference {
            None => vec!["HEAD".into()],
            Some(r) => vec![
                format!("refs/tags/{r}^{{}}"),
                format!("refs/tags/{r}"),
                format!("refs/heads/{r}"),
                r.clone(),
            ],
        };
        wanted
            .iter()
            .find_map(|w| refs.iter().find(|(_, name)| name == w))
            .map(|(sha, _)| sha.to_string())
            .ok_or_else(|| {
                format!(
                    "{}: no branch or tag {} in the repository",
                    self.url,
                    self.reference.as_deref().unwrap_or("HEAD")
                )
            })
    }

    /// Fetches `commit` into the empty directory `dest` and checks it out; keeps `.git` only
    /// with `keep_git_dir`.
    pub(crate) fn fetch(
        &self,
        commit: &str,
        dest: &Path,
        keep_git_dir: bool,
    ) -> Result<(), String> {
        git(Some(dest), &["init", "-q"])?;
        // By name when there is one: not every server hands out a commit asked for by id.
        let what = match &self.reference {
            Some(r) if !is_commit(r) => r.as_str(),
            _ => commit,
        };
        git(
            Some(dest),
            &["fetch", "-q", "--depth", "1", "--", &self.url, what],
        )?;
        let fetched = git(Some(dest), &["rev-parse", "FETCH_HEAD^{commit}"])?;
        if fetched.trim() != commit {
            return Err(format!(
                "{}: {what} moved from {commit} to {} while the build ran; build again",
                self.url,
                fetched.trim()
            ));
        }
        git(Some(dest), &["checkout", "-q", "--detach", commit])?;
        if !keep_git_dir {
            std::fs::remove_dir_all(dest.join(".git"))
                .map_err(|e| format!("removing the .git dir of the checkout: {e}"))?;
        }
        Ok(())
    }
}

/// Whether `r` is a full commit id.
fn is_commit(r: &str) -> bool {
    r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs git (in `dir`) without prompts, hooks or local transports; its stdout, or its last
/// stderr line as the error.
fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    let out = cmd
        // No local paths or ext:: commands as "remotes", no hooks, no prompts.
        .args([
            "-c",
            "protocol.file.allow=never",
            "-c",
            "protocol.ext.allow=never",
        ])
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running git: {e} (install git to ADD repositories)"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "git {}: {}",
        args.first().unwrap_or(&""),
        stderr.trim().lines().last().unwrap_or("failed")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ref_and_subdir() {
        assert_eq!(
            GitSource::parse("https://h/r.git#v1.2:docs/"),
            GitSource {
                url: "https://h/r.git".into(),
                reference: Some("v1.2".into()),
                subdir: "docs".into()
            }
        );
        assert_eq!(
            GitSource::parse("git@h:r.git"),
            GitSource {
                url: "git@h:r.git".into(),
                reference: None,
                subdir: String::new()
            }
        );
        assert_eq!(GitSource::parse("git://h/r.git#:sub").reference, None);
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit("main"));
    }
}
