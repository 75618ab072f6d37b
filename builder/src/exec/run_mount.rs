//! `RUN --mount`: BuildKit's mount specs (`type=cache,target=/root/.cache,sharing=locked`),
//! parsed and checked before anything runs, then set up as bind mounts of the step's sandbox.
//! Nothing mounted this way ends up in the step's layer.
//!
//! - `bind` (the default type): a path of the context, or of another stage or image with
//!   `from=`, read-only unless `rw` (then writes go to a throw-away copy). Its content is part
//!   of the step's cache key.
//! - `cache`: a directory kept in the store across builds, by `id` (default: the target), with
//!   `sharing=shared|private|locked`, `mode`, `uid` and `gid` for its first creation.
//! - `tmpfs`: an empty directory, dropped after the step.
//! - `secret`: a file given to the build with `--secret id=ID,src=PATH` (or `env=VAR`), at
//!   `/run/secrets/ID` unless `target` says otherwise, mode 0400; with `env=NAME` in the
//!   command's environment variable NAME instead (and also at `target` if one is given), as
//!   BuildKit does; never in a layer, a cache key or the image.

use std::path::PathBuf;

/// How builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// Every concurrent build writes the same directory.
    Shared,
    /// A concurrent build gets a fresh, empty directory of its own.
    Private,
    /// A concurrent build waits until the directory is free.
    Locked,
}

/// One parsed `--mount` of a RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunMount {
    /// `type=bind`.
    Bind {
        target: String,
        source: String,
        from: Option<String>,
        rw: bool,
    },
    /// `type=cache`.
    Cache {
        target: String,
        id: String,
        sharing: Sharing,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// `type=tmpfs`.
    Tmpfs { target: String },
    /// `type=secret`: a file at `target` (none when only `env` asks for it) and/or the
    /// environment variable `env`.
    Secret {
        target: Option<String>,
        env: Option<String>,
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl RunMount {
    /// What of this mount goes into the step's cache key, apart from content (bind sources
    /// add theirs); a secret's value never does.
    pub(crate) fn key_text(&self) -> String {
        match self {
            RunMount::Bind {
                target,
                source,
                from,
                rw,
            } => format!(
                "bind target={target} source={source} from={} rw={rw}",
                from.as_deref().unwrap_or("")
            ),
            RunMount::Cache {
                target,
                id,
                sharing,
                mode,
                uid,
                gid,
            } => format!("cache target={target} id={id} sharing={sharing:?} mode={mode:o} uid={uid} gid={gid}"),
            RunMount::Tmpfs { target } => format!("tmpfs target={target}"),
            RunMount::Secret {
                target,
                env,
                id,
                required,
                mode,
                uid,
                gid,
            } => format!(
                "secret target={} env={} id={id} required={required} mode={mode:o} uid={uid} \
                 gid={gid}",
                target.as_deref().unwrap_or(""),
                env.as_deref().unwrap_or("")
            ),
        }
    }
}

/// Parses one `--mount` value; `workdir` makes a relative target absolute. The error names the
/// offending field.
pub(crate) fn parse(spec: &str, workdir: &str) -> Result<RunMount, String> {
    let mut kind = "bind".to_string();
    let mut fields: Vec<(String, Option<String>)> = Vec::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
            None => (part.trim().to_ascii_lowercase(), None),
        };
        if k == "type" {
            kind = v.unwrap_or_default();
        } else {
            fields.push((k, v));
        }
    }
    let bad = |m: String| format!("--mount={spec}: {m}");
    let mut target = None;
    let mut source = None;
    let mut from = None;
    let mut id = None;
    let mut rw = false;
    let mut sharing = Sharing::Shared;
    let mut mode = None;
    let mut uid = 0;
    let mut gid = 0;
    let mut required = false;
    let mut env = None;
    for (k, v) in fields {
        let value = || v.clone().ok_or_else(|| bad(format!("{k} needs a value")));
        let flag = |v: &Option<String>| match v.as_deref() {
            None | Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(bad(format!("{k}={other}: use true or false"))),
        };
        match k.as_str() {
            "target" | "dst" | "destination" => target = Some(value()?),
            "source" | "src" => source = Some(value()?),
            "from" => from = Some(value()?),
            "id" => id = Some(value()?),
            "rw" | "readwrite" => rw = flag(&v)?,
            "ro" | "readonly" => rw = !flag(&v)?,
            "required" => required = flag(&v)?,
            "sharing" => {
                sharing = match value()?.as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    other => {
                        return Err(bad(format!(
                            "sharing={other}: use shared, private or locked"
                        )))
                    }
                }
            }
            "mode" => {
                let m = value()?;
                mode = Some(
                    u32::from_str_radix(&m, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| bad(format!("mode={m}: use an octal mode like 0755")))?,
                );
            }
            "uid" | "gid" => {
                let n = value()?;
                let n: u32 = n
                    .parse()
                    .map_err(|_| bad(format!("{k}={n}: use a numeric id")))?;
                if k == "uid" {
                    uid = n;
                } else {
                    gid = n;
                }
            }
            "size" if kind == "tmpfs" => {}
            "env" if kind == "secret" => {
                let name = value()?;
                if name.is_empty() || name.contains('=') || name.contains('\0') {
                    return Err(bad(format!("env={name}: use a variable name")));
                }
                env = Some(name);
            }
            other => return Err(bad(format!("unknown option {other} for type={kind}"))),
        }
    }
    let absolute = |t: String| {
        if t.starts_with('/') {
            t
        } else {
            format!("{}/{t}", workdir.trim_end_matches('/'))
        }
    };
    let need_target = |t: Option<String>| {
        t.map(absolute)
            .ok_or_else(|| bad(format!("type={kind} needs target=PATH")))
    };
    let only = |what: &str, given: bool| {
        if given {
            Err(bad(format!("{what} does not apply to type={kind}")))
        } else {
            Ok(())
        }
    };
    match kind.as_str() {
        "bind" => {
            only("id", id.is_some())?;
            Ok(RunMount::Bind {
                target: need_target(target)?,
                source: source.unwrap_or_else(|| ".".into()),
                from,
                rw,
            })
        }
        "cache" => {
            only("from", from.is_some())?;
            only("source", source.is_some())?;
            let target = need_target(target)?;
            Ok(RunMount::Cache {
                id: id.unwrap_or_else(|| target.clone()),
                target,
                sharing,
                mode: mode.unwrap_or(0o755),
                uid,
                gid,
            })
        }
        "tmpfs" => {
            only("from", from.is_some())?;
            only("source", source.is_some())?;
            Ok(RunMount::Tmpfs {
                target: need_target(target)?,
            })
        }
        "secret" => {
            only("from", from.is_some())?;
            let id = match (id, &target) {
                (Some(id), _) => id,
                (None, Some(t)) => t.rsplit('/').next().unwrap_or_default().to_string(),
                (None, None) => return Err(bad("type=secret needs id=ID or target=PATH".into())),
            };
            if id.is_empty() {
                return Err(bad("type=secret needs id=ID".into()));
            }
            // BuildKit: the file is at /run/secrets/ID unless a target says otherwise, and
            // there is no file when only env= asks for the secret.
            let target = match (target, &env) {
                (Some(t), _) => Some(absolute(t)),
                (None, Some(_)) => None,
                (None, None) => Some(format!("/run/secrets/{id}")),
            };
            Ok(RunMount::Secret {
                target,
                env,
                id,
                required,
                mode: mode.unwrap_or(0o400),
                uid,
                gid,
            })
        }
        "ssh" => Err(bad(
            "type=ssh is not supported by rbuild: it forwards no SSH agent; fetch with a \
             secret mount instead"
                .into(),
        )),
        other => Err(bad(format!(
            "unknown type={other}: use bind, cache, tmpfs or secret"
        ))),
    }
}

/// Parses a `--secret` build flag: `id=ID,src=PATH` (also `source=`, `type=file`) or
/// `id=ID,env=VAR` (`type=env`); a bare `id=ID` reads the environment variable ID, as docker
/// does. Returns the id and the secret's bytes.
pub fn parse_secret_flag(flag: &str) -> Result<(String, Vec<u8>), String> {
    let mut id = None;
    let mut src: Option<PathBuf> = None;
    let mut env = None;
    for part in flag.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--secret {flag}: expected KEY=VALUE, got {part}"))?;
        match k {
            "id" => id = Some(v.to_string()),
            "src" | "source" => src = Some(PathBuf::from(v)),
            "env" => env = Some(v.to_string()),
            "type" if v == "file" || v == "env" => {}
            other => return Err(format!("--secret {flag}: unknown key {other}")),
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| format!("--secret {flag}: id=ID is required"))?;
    let value = match (src, env) {
        (Some(path), _) => std::fs::read(&path)
            .map_err(|e| format!("--secret {flag}: reading {}: {e}", path.display()))?,
        (None, var) => {
            let var = var.unwrap_or_else(|| id.clone());
            std::env::var_os(&var)
                .map(|v| v.into_encoded_bytes())
                .ok_or_else(|| format!("--secret {flag}: environment variable {var} is not set"))?
        }
    };
    Ok((id, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_type_with_buildkit_defaults() {
        assert_eq!(
            parse("type=cache,target=/root/.cache", "/").unwrap(),
            RunMount::Cache {
                target: "/root/.cache".into(),
                id: "/root/.cache".into(),
                sharing: Sharing::Shared,
                mode: 0o755,
                uid: 0,
                gid: 0
            }
        );
        assert_eq!(
            parse("target=src,source=app,ro", "/work").unwrap(),
            RunMount::Bind {
                target: "/work/src".into(),
                source: "app".into(),
                from: None,
                rw: false
            }
        );
        assert_eq!(
            parse("type=bind,from=build,source=/out,target=/in,rw", "/").unwrap(),
            RunMount::Bind {
                target: "/in".into(),
                source: "/out".into(),
                from: Some("build".into()),
                rw: true
            }
        );
        assert_eq!(
            parse("type=secret,id=token", "/").unwrap(),
            RunMount::Secret {
                target: Some("/run/secrets/token".into()),
                env: None,
                id: "token".into(),
                required: false,
                mode: 0o400,
                uid: 0,
                gid: 0
            }
        );
        assert_eq!(
            parse(
                "type=cache,id=apt,target=/var/cache/apt,sharing=locked,mode=0700,uid=5",
                "/"
            )
            .unwrap(),
            RunMount::Cache {
                target: "/var/cache/apt".into(),
                id: "apt".into(),
                sharing: Sharing::Locked,
                mode: 0o700,
                uid: 5,
                gid: 0
            }
        );
        // env= alone: no file; with a target: both.
        assert_eq!(
            parse("type=secret,id=aws,env=AWS_KEY", "/").unwrap(),
            RunMount::Secret {
                target: None,
                env: Some("AWS_KEY".into()),
                id: "aws".into(),
                required: false,
                mode: 0o400,
                uid: 0,
                gid: 0
            }
        );
        assert_eq!(
            parse("type=secret,id=aws,env=K,target=k", "/w").unwrap(),
            RunMount::Secret {
                target: Some("/w/k".into()),
                env: Some("K".into()),
                id: "aws".into(),
                required: false,
                mode: 0o400,
                uid: 0,
                gid: 0
            }
        );
        assert_eq!(
            parse("type=tmpfs,target=/tmp,size=64m", "/").unwrap(),
            RunMount::Tmpfs {
                target: "/tmp".into()
            }
        );
    }

    #[test]
    fn bad_specs_name_the_field() {
        for (spec, want) in [
            ("type=cache", "needs target=PATH"),
            ("type=cache,target=/c,sharing=all", "sharing=all"),
            ("type=cache,target=/c,mode=9", "mode=9"),
            ("type=cache,target=/c,uid=root", "uid=root"),
            ("type=cache,target=/c,from=x", "from does not apply"),
            ("type=volume,target=/c", "unknown type=volume"),
            ("type=ssh", "type=ssh is not supported"),
            ("type=bind,target=/c,colour=red", "unknown option colour"),
            ("type=secret", "needs id=ID"),
            ("type=secret,env=X", "needs id=ID"),
            ("type=secret,id=s,env=", "env=: use a variable name"),
            ("type=cache,target=/c,env=X", "unknown option env"),
        ] {
            let err = parse(spec, "/").unwrap_err();
            assert!(err.contains(want), "{spec}: {err}");
            assert!(err.starts_with(&format!("--mount={spec}")), "{err}");
        }
    }

    #[test]
    fn secret_flags_read_files_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, b"hunter2").unwrap();
        let flag = format!("id=pw,src={}", path.display());
        assert_eq!(
            parse_secret_flag(&flag).unwrap(),
            ("pw".to_string(), b"hunter2".to_vec())
        );
        std::env::set_var("RBUILD_TEST_SECRET_VAR", "from-env");
        assert_eq!(
            parse_secret_flag("id=x,env=RBUILD_TEST_SECRET_VAR")
                .unwrap()
                .1,
            b"from-env"
        );
        assert!(parse_secret_flag("src=/x").unwrap_err().contains("id=ID"));
        assert!(parse_secret_flag("id=y,src=/nonexistent/file")
            .unwrap_err()
            .contains("reading /nonexistent/file"));
    }
}
