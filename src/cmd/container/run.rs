//! `rbuild run`: create a container record from an image and the flags, then start it.

use super::start::{start_container, Attach};
use super::state::{self, ContainerConfig, ContainerState, LimitsConfig, MountConfig, Status};
use super::RunArgs;
use crate::cmd::image::open_store;
use crate::cmd::Globals;
use anyhow::{bail, Context};
use std::process::ExitCode;

/// Docker's default PATH, added when the image sets none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Parses "64m", "1g", "512k", "1024" (bytes) like docker.
pub fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid size {s:?}: use a number with an optional k, m or g"))?;
    if n < 0.0 {
        bail!("invalid size {s:?}: must not be negative");
    }
    Ok((n * mult as f64) as u64)
}

/// Merges KEY=VALUE settings into `env` (a later setting of a key replaces an earlier one).
pub fn merge_env(env: &mut Vec<String>, settings: &[String]) {
    for s in settings {
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (s.clone(), std::env::var(s).ok()),
        };
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        if let Some(v) = value {
            env.push(format!("{key}={v}"));
        }
    }
}

fn read_env_file(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --env-file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

fn parse_volume(v: &str) -> anyhow::Result<MountConfig> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, "rw"),
        [s, d, m] => (*s, *d, *m),
        _ => bail!("invalid volume {v:?}: use HOST:CONTAINER[:ro]"),
    };
    if !src.starts_with('/') || !dst.starts_with('/') {
        bail!("invalid volume {v:?}: both paths must be absolute");
    }
    let readonly = match mode {
        "ro" => true,
        "rw" => false,
        other => bail!("invalid volume mode {other:?} in {v:?}: use ro or rw"),
    };
    if !std::path::Path::new(src).exists() {
        std::fs::create_dir_all(src).with_context(|| format!("creating volume source {src}"))?;
    }
    Ok(MountConfig {
        source: src.into(),
        target: dst.into(),
        readonly,
    })
}

/// ENTRYPOINT/CMD as docker combines them: `--entrypoint` replaces the image's entrypoint and
/// drops its CMD; command-line arguments replace CMD.
pub fn resolve_argv(
    image_entrypoint: &[String],
    image_cmd: &[String],
    entrypoint_flag: Option<&str>,
    args: &[String],
) -> (Vec<String>, Vec<String>) {
    let entrypoint: Vec<String> = match entrypoint_flag {
        Some("") => Vec::new(),
        Some(e) => vec![e.to_string()],
        None => image_entrypoint.to_vec(),
    };
    let cmd: Vec<String> = if !args.is_empty() {
        args.to_vec()
    } else if entrypoint_flag.is_some() {
        Vec::new()
    } else {
        image_cmd.to_vec()
    };
    let mut argv = entrypoint.clone();
    argv.extend(cmd);
    (entrypoint, argv)
}

/// The image `name` from the store, pulled from its registry first when the store lacks it (as
/// `docker run` does), with docker's messages on stderr.
fn resolve_or_pull(
    store: &rbuild_layerfs::store::Store,
    name: &str,
) -> anyhow::Result<rbuild_layerfs::Image> {
    let local_err = match store.resolve_image(name) {
        Ok(image) => return Ok(image),
        Err(e) => e,
    };
    let Ok(reference) = rbuild_registry::reference::ImageRef::parse(name) else {
        return Err(local_err).with_context(|| format!("unable to find image {name}"));
    };
    eprintln!("Unable to find image '{name}' locally");
    let options = rbuild_registry::PullOptions {
        config: rbuild_registry::RegistryConfig::load_default()?,
        ..rbuild_registry::PullOptions::default()
    };
    let progress = std::sync::Arc::new(rbuild_registry::NoProgress);
    let pulled = rbuild_registry::pull_blocking(store, &reference, &options, progress)
        .with_context(|| {
            format!("unable to find image {name} locally, and pulling {reference} failed")
        })?;
    eprintln!("Digest: {}", pulled.resolved_digest);
    eprintln!("Status: Downloaded newer image for {reference}");
    store
        .resolve_image(name)
        .or_else(|_| store.resolve_image(pulled.config_digest.as_ref()))
        .with_context(|| format!("image {name} after pulling it"))
}

/// `rbuild run`.
pub fn run(g: &Globals, a: RunArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    let image = resolve_or_pull(&store, &a.image)?;
    let cfg = image.config.config().clone().unwrap_or_default();
    let (entrypoint, argv) = resolve_argv(
        cfg.entrypoint().as_deref().unwrap_or(&[]),
        cfg.cmd().as_deref().unwrap_or(&[]),
        a.entrypoint.as_deref(),
        &a.command,
    );
    if argv.is_empty() {
        bail!(
            "no command specified: the image {} has no ENTRYPOINT or CMD; give one",
            a.image
        );
    }
    let id = state::new_id();
    let hostname = a.hostname.clone().unwrap_or_else(|| id[..12].to_string());
    let mut env: Vec<String> = cfg.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    merge_env(&mut env, &[format!("HOSTNAME={hostname}")]);
    for f in &a.env_file {
        merge_env(&mut env, &read_env_file(f)?);
    }
    merge_env(&mut env, &a.env);
    let network = match a.network.as_str() {
        "none" | "host" | "private" => a.network.clone(),
        "bridge" => "private".to_string(),
        other => bail!("unsupported --network {other:?}: use none, private or host"),
    };
    let mounts = a
        .volume
        .iter()
        .map(|v| parse_volume(v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pids = match a.pids_limit {
        Some(n) if n > 0 => Some(n as u64),
        _ => None,
    };
    let limits = LimitsConfig {
        memory: a.memory.as_deref().map(parse_bytes).transpose()?,
        cpus: a.cpus,
        cpu_shares: a.cpu_shares,
        cpuset_cpus: a.cpuset_cpus.clone(),
        pids,
        blkio_weight: a.blkio_weight,
    };
    if let Some(c) = a.cpus {
        if c <= 0.0 {
            bail!("--cpus must be greater than 0");
        }
    }
    let name = match &a.name {
        Some(n) => {
            if !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                || n.is_empty()
            {
                bail!("invalid container name {n:?}: use letters, digits, _ . -");
            }
            if state::find(store.root(), n).is_ok_and(|c| c.name == *n) {
                bail!("the container name {n:?} is already in use; remove that container or pick another name");
            }
            n.clone()
        }
        None => format!("rbuild_{}", &id[..8]),
    };
    let st = ContainerState {
        id: id.clone(),
        name,
        image: a.image.clone(),
        image_id: image.id().to_string(),
        manifest: image.manifest_digest.to_string(),
        created: state::now(),
        config: ContainerConfig {
            args: argv,
            entrypoint,
            env,
            cwd: a
                .workdir
                .clone()
                .or_else(|| cfg.working_dir().clone())
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            user: a
                .user
                .clone()
                .or_else(|| cfg.user().clone())
                .unwrap_or_default(),
            hostname,
            network,
            mounts,
            readonly: a.read_only,
            tty: a.tty,
            interactive: a.interactive,
            auto_remove: a.rm,
            limits,
        },
        status: Status::Created,
        pid: 0,
        monitor_pid: 0,
        exit_code: None,
        oom_killed: false,
        started_at: None,
        finished_at: None,
        cgroup: None,
        driver: g.storage_driver.clone(),
        error: None,
        fuse_server_pid: None,
    };
    let dir = st.dir(store.root());
    for sub in ["upper", "work", "merged"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    st.save(store.root())?;
    let attach = if a.detach {
        Attach::Detached
    } else {
        Attach::Foreground
    };
    start_container(&store, st, attach)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_like_docker() {
        let ep = v(&["/entry"]);
        let cmd = v(&["default"]);
        assert_eq!(
            resolve_argv(&ep, &cmd, None, &[]).1,
            v(&["/entry", "default"])
        );
        assert_eq!(
            resolve_argv(&ep, &cmd, None, &v(&["x"])).1,
            v(&["/entry", "x"])
        );
        assert_eq!(
            resolve_argv(&ep, &cmd, Some("/other"), &[]).1,
            v(&["/other"])
        );
        assert_eq!(
            resolve_argv(&ep, &cmd, Some("/other"), &v(&["a"])).1,
            v(&["/other", "a"])
        );
        assert_eq!(resolve_argv(&ep, &cmd, Some(""), &v(&["ls"])).1, v(&["ls"]));
        assert_eq!(resolve_argv(&[], &cmd, None, &[]).1, v(&["default"]));
        assert!(resolve_argv(&[], &[], Some(""), &[]).1.is_empty());
    }

    #[test]
    fn sizes_and_env() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert!(parse_bytes("lots").is_err());
        let mut env = v(&["PATH=/bin", "A=1"]);
        merge_env(&mut env, &v(&["A=2", "B=3"]));
        assert_eq!(env, v(&["PATH=/bin", "A=2", "B=3"]));
    }
}
