//! Registry commands: pull, push, login, logout.

mod progress;

use super::Globals;
use anyhow::Context;
use progress::TermProgress;
use rbuild_layerfs::Store;
use rbuild_registry::reference::normalize_registry_name;
use rbuild_registry::{
    pull_blocking, push_blocking, verify_login_blocking, ClientOptions, Credential,
    CredentialStore, ImageRef, ManifestFormat, NoProgress, Platform, Progress, PullOptions,
    PushOptions, RegistryConfig,
};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

/// Registry commands (pull, push, login, logout)
#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Download an image from a registry.
    Pull {
        /// Print only the image name.
        #[arg(short, long)]
        quiet: bool,
        /// Platform to pick from a multi-platform image (os/arch[/variant]).
        #[arg(long)]
        platform: Option<String>,
        /// Require HTTPS and verify certificates (loopback registries always use HTTP).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        tls_verify: bool,
        /// Image reference: [HOST[:PORT]/]NAME[:TAG][@DIGEST].
        reference: String,
    },
    /// Upload an image to a registry.
    Push {
        /// Print only the manifest digest.
        #[arg(short, long)]
        quiet: bool,
        /// Manifest format: oci or docker (v2 schema 2); default: as stored.
        #[arg(long)]
        format: Option<ManifestFormat>,
        /// Require HTTPS and verify certificates (loopback registries always use HTTP).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        tls_verify: bool,
        /// Image to push, named as it should be in the registry.
        reference: String,
    },
    /// Save credentials for a registry in the Docker config file.
    Login {
        /// User name.
        #[arg(short, long)]
        username: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Require HTTPS and verify certificates (loopback registries always use HTTP).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        tls_verify: bool,
        /// Registry (default docker.io).
        registry: Option<String>,
    },
    /// Remove the saved credentials of a registry.
    Logout {
        /// Registry (default docker.io).
        registry: Option<String>,
    },
}

/// Runs one of these commands.
pub fn run(g: &Globals, cmd: RegistryCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RegistryCommand::Pull {
            quiet,
            platform,
            tls_verify,
            reference,
        } => pull(g, quiet, platform, tls_verify, &reference),
        RegistryCommand::Push {
            quiet,
            format,
            tls_verify,
            reference,
        } => push(g, quiet, format, tls_verify, &reference),
        RegistryCommand::Login {
            username,
            password_stdin,
            tls_verify,
            registry,
        } => login(username, password_stdin, tls_verify, registry.as_deref()),
        RegistryCommand::Logout { registry } => logout(registry.as_deref()),
    }
}

fn progress_for(quiet: bool, verb: &'static str) -> Arc<dyn Progress> {
    if quiet {
        Arc::new(NoProgress)
    } else {
        Arc::new(TermProgress::new(verb))
    }
}

fn open_store(g: &Globals) -> anyhow::Result<Store> {
    let root = g.store_root();
    let store = Store::open(&root).with_context(|| format!("open store {}", root.display()))?;
    super::image::report_recovery(&store);
    Ok(store)
}

fn pull(
    g: &Globals,
    quiet: bool,
    platform: Option<String>,
    tls_verify: bool,
    reference: &str,
) -> anyhow::Result<ExitCode> {
    let image = ImageRef::parse(reference)?;
    let options = PullOptions {
        platform: platform.as_deref().map(Platform::parse).transpose()?,
        tls_verify,
        config: RegistryConfig::load_default()?,
        ..PullOptions::default()
    };
    let store = open_store(g)?;
    if !quiet {
        match image.tag() {
            Some(tag) => eprintln!("{tag}: Pulling from {}", image.repository()),
            None => eprintln!("Pulling {image}"),
        }
    }
    let pulled = pull_blocking(&store, &image, &options, progress_for(quiet, "Downloading"))
        .with_context(|| format!("pull {image}"))?;
    if !quiet {
        eprintln!("Digest: {}", pulled.resolved_digest);
        eprintln!("Status: Downloaded image for {image}");
    }
    println!("{image}");
    Ok(ExitCode::SUCCESS)
}

fn push(
    g: &Globals,
    quiet: bool,
    format: Option<ManifestFormat>,
    tls_verify: bool,
    reference: &str,
) -> anyhow::Result<ExitCode> {
    let dest = ImageRef::parse(reference)?;
    let options = PushOptions {
        format,
        tls_verify,
        config: RegistryConfig::load_default()?,
        ..PushOptions::default()
    };
    let store = open_store(g)?;
    let source = match dest.tag() {
        Some(_) => dest.tagged_name(),
        None => reference.split('@').next().unwrap_or(reference).to_string(),
    };
    if !quiet {
        eprintln!(
            "The push refers to repository [{}/{}]",
            dest.registry(),
            dest.repository()
        );
    }
    let pushed = push_blocking(
        &store,
        &source,
        &dest,
        &options,
        progress_for(quiet, "Pushing"),
    )
    .with_context(|| format!("push {dest}"))?;
    if quiet {
        println!("{}", pushed.digest);
    } else {
        println!(
            "{}: digest: {} size: {}",
            dest.manifest_reference(),
            pushed.digest,
            pushed.size
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn login(
    username: Option<String>,
    password_stdin: bool,
    tls_verify: bool,
    registry: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let registry = normalize_registry_name(registry.unwrap_or("docker.io"));
    let interactive = std::io::stdin().is_terminal();
    let username = match username {
        Some(u) => u,
        None if interactive && !password_stdin => prompt("Username: ")?,
        None => anyhow::bail!("login to {registry}: give the user name with -u USER"),
    };
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("read the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else if interactive {
        prompt_hidden("Password: ")?
    } else {
        anyhow::bail!(
            "login to {registry}: no terminal to ask for the password; use --password-stdin"
        )
    };
    if password.is_empty() {
        anyhow::bail!("login to {registry}: the password is empty");
    }
    let credential = Credential::Basic {
        username: username.clone(),
        password: password.clone(),
    };
    verify_login_blocking(
        &registry,
        credential,
        &RegistryConfig::load_default()?,
        tls_verify,
        &ClientOptions::default(),
    )
    .with_context(|| format!("login to {registry}"))?;
    let store = CredentialStore::from_env();
    store.login(&registry, &username, &password)?;
    eprintln!("credentials saved in {}", store.path().display());
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

fn logout(registry: Option<&str>) -> anyhow::Result<ExitCode> {
    let registry = normalize_registry_name(registry.unwrap_or("docker.io"));
    let store = CredentialStore::from_env();
    if store.logout(&registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        eprintln!("not logged in to {registry}");
    }
    Ok(ExitCode::SUCCESS)
}

fn prompt(label: &str) -> anyhow::Result<String> {
    eprint!("{label}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

fn prompt_hidden(label: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("read terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turn off echo")?;
    let line = prompt(label);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    line
}
