//! `import`: a root filesystem (a directory, or a tar that may be gzip/zstd compressed) becomes a
//! one-layer base image, with optional config changes (`--change 'CMD ["sh"]'`) and a message.

use crate::image::{rfc3339, Image};
use crate::layer::{apply_layer, write_layer, ApplyLimits, LayerError, LayerInfo, WriteOptions};
use crate::store::{Store, StoreError};
use oci_spec::image::{Config, HistoryBuilder, ImageConfiguration};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing or applying the layer failed.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// A `--change` could not be understood.
    #[error("invalid --change {change:?}: {reason}")]
    BadChange {
        /// The change as given.
        change: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The source could not be read.
    #[error("import source {path}: {cause}")]
    Source {
        /// The source path.
        path: String,
        /// The OS error.
        cause: io::Error,
    },
}

/// What to import and how.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Dockerfile-style config changes: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME,
    /// WORKDIR, STOPSIGNAL.
    pub changes: Vec<String>,
    /// Commit message (the history comment).
    pub message: Option<String>,
    /// Layer compression and mtime clamping.
    pub write: WriteOptions,
}

/// Imports a rootfs directory, a tar file, or `-` (a tar on stdin) as a new untagged image.
pub fn import_rootfs(
    store: &Store,
    source: &Path,
    opts: &ImportOptions,
) -> Result<Image, ImportError> {
    let mut cfg = Config::default();
    for change in &opts.changes {
        apply_change(&mut cfg, change)?;
    }
    let source_str = source.display().to_string();
    let layer = if source.is_dir() {
        layer_from_dir(store, source, &opts.write)?
    } else if source_str == "-" {
        layer_from_tar(store, io::stdin().lock(), &opts.write)?
    } else {
        let file = File::open(source).map_err(|e| ImportError::Source {
            path: source_str.clone(),
            cause: e,
        })?;
        layer_from_tar(store, BufReader::with_capacity(1 << 20, file), &opts.write)?
    };
    let now = rfc3339(std::time::SystemTime::now());
    let history = HistoryBuilder::default()
        .created(now.clone())
        .comment(
            opts.message
                .clone()
                .unwrap_or_else(|| format!("Imported from {source_str}")),
        )
        .build()
        .map_err(StoreError::from)?;
    let mut config = ImageConfiguration::default();
    config.set_created(Some(now));
    config.set_config(Some(cfg));
    config.set_history(Some(vec![history]));
    let image = store.write_image(&config, &[layer])?;
    // Unpack now so the image can be mounted and run at once.
    store.image_layer_dirs(&image)?;
    Ok(image)
}

/// Writes a directory as a layer blob.
fn layer_from_dir(
    store: &Store,
    dir: &Path,
    opts: &WriteOptions,
) -> Result<LayerInfo, ImportError> {
    let mut ingest = store.ingest()?;
    let info = write_layer(dir, opts, &mut ingest)?;
    ingest.commit(Some(&info.digest), Some(info.size))?;
    Ok(info)
}

/// Applies a tar (plain, gzip or zstd) into a scratch dir, writes that as the layer blob (so the
/// blob is normalised and safe) and commits the dir as the unpacked layer.
fn layer_from_tar(
    store: &Store,
    input: impl Read,
    opts: &WriteOptions,
) -> Result<LayerInfo, ImportError> {
    let scratch = store.scratch_dir("import")?;
    let dest = scratch.path().join("layer");
    apply_layer(input, &dest, &ApplyLimits::default())?;
    let info = layer_from_dir(store, &dest, opts)?;
    store.commit_layer_dir_of_blob(&dest, &info.diff_id, Some(&info.digest))?;
    Ok(info)
}

/// Applies one Dockerfile-style change to a config.
pub fn apply_change(cfg: &mut Config, change: &str) -> Result<(), ImportError> {
    let bad = |reason: &str| ImportError::BadChange {
        change: change.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = change.trim();
    let (keyword, rest) = match trimmed.split_once(char::is_whitespace) {
        Some((k, r)) => (k, r.trim()),
        None => (trimmed, ""),
    };
    if rest.is_empty() {
        return Err(bad("the instruction needs an argument"));
    }
    match keyword.to_ascii_uppercase().as_str() {
        "CMD" => {
            cfg.set_cmd(Some(exec_or_shell(rest).map_err(|r| bad(&r))?));
        }
        "ENTRYPOINT" => {
            cfg.set_entrypoint(Some(exec_or_shell(rest).map_err(|r| bad(&r))?));
        }"ENV" => {
            let mut env = cfg.env().clone().unwrap_or_default();
            for (k, v) in key_values(rest).map_err(|r| bad(&r))? {
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
                env.push(format!("{k}={v}"));
            }
            cfg.set_env(Some(env));
        }
        "LABEL" => {
            let mut labels: HashMap<String, String> = cfg.labels().clone().unwrap_or_default();
            for (k, v) in key_values(rest).map_err(|r| bad(&r))? {
                labels.insert(k, v);
            }
            cfg.set_labels(Some(labels));
        }
        "EXPOSE" => {
            let mut ports = cfg.exposed_ports().clone().unwrap_or_default();
            for p in words(rest).map_err(|r| bad(&r))? {
                let p = if p.contains('/') { p } else { format!("{p}/tcp") };
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
            cfg.set_exposed_ports(Some(ports));
        }
        "VOLUME" => {
            let mut vols = cfg.volumes().clone().unwrap_or_default();
            let new = if rest.starts_with('[') {
                json_array(rest).map_err(|r| bad(&r))?
            } else {
                words(rest).map_err(|r| bad(&r))?
            };
            for v in new {
                if !vols.contains(&v) {
                    vols.push(v);
                }
            }
            cfg.set_volumes(Some(vols));
        }
        "USER" => {
            cfg.set_user(Some(rest.to_string()));
        }
        "WORKDIR" => {
            let dir = match (cfg.working_dir(), rest.starts_with('/')) {
                (Some(base), false) => format!("{}/{rest}", base.trim_end_matches('/')),
                _ => rest.to_string(),
            };
            cfg.set_working_dir(Some(dir));
        }
        "STOPSIGNAL" => {
            cfg.set_stop_signal(Some(rest.to_string()));
        }
        other => {
            return Err(bad(&format!(
                "{other} is not supported; use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR or STOPSIGNAL"
            )))
        }
    }
    Ok(())
}

/// `["a","b"]` (exec form) or `a b` (shell form, run with /bin/sh -c).
fn exec_or_shell(rest: &str) -> Result<Vec<String>, String> {
    if rest.starts_with('[') {
        if let Ok(v) = json_array(rest) {
            return Ok(v);
        }
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_string()])
}

fn json_array(rest: &str) -> Result<Vec<String>, String> {
    serde_json::from_str::<Vec<String>>(rest)
        .map_err(|e| format!("not a JSON array of strings: {e}"))
}

/// `k=v k2="v 2"` or the legacy `k v...` form.
fn key_values(rest: &str) -> Result<Vec<(String, String)>, String> {
    let tokens = words(rest)?;
    let first_raw = rest.split_whitespace().next().unwrap_or("");
    if !first_raw.contains('=') {
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or("expected KEY=VALUE or KEY VALUE")?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    tokens
        .into_iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{t:?} is not KEY=VALUE")),
        })
        .collect()
}

/// Splits on whitespace, honouring single quotes, double quotes and backslash escapes.
fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                in_word = true;
                match chars.next() {
                    Some(n) => cur.push(n),
                    None => cur.push('\\'),
                }
            }
            (_, c) => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_like_dockerfile_instructions() {
        let mut c = Config::default();
        apply_change(&mut c, r#"CMD ["sh", "-c", "echo hi"]"#).unwrap();
        apply_change(&mut c, "ENTRYPOINT echo hi").unwrap();
        apply_change(&mut c, r#"ENV A=1 B="two words""#).unwrap();
        apply_change(&mut c, "ENV C three words").unwrap();
        apply_change(&mut c, "ENV A=replaced").unwrap();
        apply_change(&mut c, "LABEL version=1.0 'k 2'=v").unwrap();
        apply_change(&mut c, "EXPOSE 80 53/udp").unwrap();
        apply_change(&mut c, "WORKDIR /srv").unwrap();
        apply_change(&mut c, "WORKDIR app").unwrap();
        apply_change(&mut c, "USER 1000:1000").unwrap();
        assert_eq!(c.cmd().clone().unwrap(), ["sh", "-c", "echo hi"]);
        assert_eq!(
            c.entrypoint().clone().unwrap(),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(
            c.env().clone().unwrap(),
            ["B=two words", "C=three words", "A=replaced"]
        );
        assert_eq!(c.labels().clone().unwrap()["k 2"], "v");
        assert_eq!(c.exposed_ports().clone().unwrap(), ["80/tcp", "53/udp"]);
        assert_eq!(c.working_dir().as_deref(), Some("/srv/app"));
        assert_eq!(c.user().as_deref(), Some("1000:1000"));
        assert!(apply_change(&mut c, "RUN echo").is_err());
        assert!(apply_change(&mut c, "CMD").is_err());
        assert!(apply_change(&mut c, "ENV A='unterminated").is_err());
    }
}
