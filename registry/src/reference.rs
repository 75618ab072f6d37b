//! Image references with Docker's normalisation (`busybox` = `docker.io/library/busybox:latest`).
//!
//! The grammar is Docker's (distribution's `reference` package), parsed by hand: a regex engine
//! would compile its automaton in every process, tens of milliseconds before any command can start.
//!
//! ```text
//! reference      := name [ ":" tag ] [ "@" digest ]
//! name           := [ domain-and-port "/" ] path-component ( "/" path-component )*
//! domain-and-port:= ( domain-name | "[" ipv6-hex-and-colons "]" ) [ ":" port-digits ]
//! domain-name    := label ( "." label )*          label := [a-zA-Z0-9] ( [a-zA-Z0-9-]* [a-zA-Z0-9] )?
//! path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag            := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest         := algorithm ":" hex{32,}      algorithm := [A-Za-z][A-Za-z0-9]* ( [-_+.] [A-Za-z][A-Za-z0-9]* )*
//! ```
//!
//! The first path component is the registry only when it contains `.` or `:` or is `localhost`
//! (or is an IPv6 literal); otherwise the image is on Docker Hub, in `library/` when the path has
//! a single component. `index.docker.io` is the same registry as `docker.io`.

use crate::error::{RegistryError, Result};
use rbuild_layerfs::Digest;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The registry name Docker Hub images carry in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's distribution API.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
/// The legacy name of Docker Hub, normalised to [`DOCKER_HUB`].
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// The repository namespace of Docker Hub's official images.
const OFFICIAL_NAMESPACE: &str = "library";
/// Longest repository path Docker accepts.
const MAX_PATH_LEN: usize = 255;
/// Longest tag Docker accepts.
const MAX_TAG_LEN: usize = 128;

/// A fully normalised image reference: registry, repository, and a tag and/or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses a reference the way `docker pull` does; a missing tag (and digest) means `latest`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts = split_reference(s).map_err(|reason| RegistryError::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        })?;
        let digest = parts
            .digest
            .map(|d| {
                Digest::parse(d).map_err(|e| RegistryError::InvalidReference {
                    reference: s.to_string(),
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let tag = match (parts.tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(ImageRef {
            registry: parts.registry,
            repository: parts.repository,
            tag,
            digest,
        })
    }

    /// Registry name as written in references (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest when given, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same image, pinned to a digest (the tag is kept).
    pub fn with_digest(&self, digest: Digest) -> Self {
        ImageRef {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `registry/repository:tag` (the name a local tag is stored under); digest-only references
    /// give `registry/repository@digest`.
    pub fn tagged_name(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), _) => format!("{}/{}:{}", self.registry, self.repository, t),
            (None, Some(d)) => format!("{}/{}@{}", self.registry, self.repository, d),
            (None, None) => format!("{}/{}:latest", self.registry, self.repository),
        }
    }

    /// Host and port that serve this registry's API (`registry-1.docker.io` for Docker Hub).
    pub fn endpoint_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_ENDPOINT
        } else {
            &self.registry
        }
    }

    /// Whether the registry is local (localhost or 127.0.0.0/8, ::1) and so spoken to over plain
    /// HTTP without any flag, as Docker does.
    pub fn is_loopback_registry(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

/// A reference split into its normalised parts, the digest not yet checked for a supported
/// algorithm.
#[derive(Debug, PartialEq, Eq)]
struct Parts<'a> {
    registry: String,
    repository: String,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Splits and validates `s` against Docker's reference grammar; the error is the reason, worded
/// as Docker words it.
fn split_reference(s: &str) -> std::result::Result<Parts<'_>, String> {
    if s.is_empty() {
        return Err("repository name must have at least one component".into());
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    if let Some(d) = digest {
        check_digest(d)?;
    }
    // A tag follows the last ':' unless a '/' comes after it (then that ':' is a port's).
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        if !is_tag(t) {
            return Err(
                if t.len() > MAX_TAG_LEN && t.get(..MAX_TAG_LEN).is_some_and(is_tag) {
                    format!("tag is longer than {MAX_TAG_LEN} characters")
                } else {
                    "invalid reference format".into()
                },
            );
        }
    }
    if !is_name(name) {
        return Err(if is_name(&name.to_ascii_lowercase()) {
            "repository name must be lowercase".into()
        } else {
            "invalid reference format".into()
        });
    }
    // The registry is the first component when it looks like a host (Docker's rule).
    let (domain, path) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':', '[']) || first == "localhost" => {
            (Some(first), path)
        }
        _ => (None, name),
    };
    if !is_path(path) {
        return Err("repository name must be lowercase".into());
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!(
            "repository name must not be more than {MAX_PATH_LEN} characters"
        ));
    }
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            "cannot specify 64-byte hexadecimal strings (an image ID is not a name)".into(),
        );
    }
    let registry = match domain {
        None | Some(DOCKER_HUB_LEGACY) => DOCKER_HUB,
        Some(d) => d,
    };
    let repository = if registry == DOCKER_HUB && !path.contains('/') {
        format!("{OFFICIAL_NAMESPACE}/{path}")
    } else {
        path.to_string()
    };
    Ok(Parts {
        registry: registry.to_string(),
        repository,
        tag,
        digest,
    })
}

/// `[domain-and-port "/"] path`: a name Docker's grammar accepts (how it splits is decided
/// separately, by Docker's normalisation rule).
fn is_name(name: &str) -> bool {
    is_path(name)
        || name
            .split_once('/')
            .is_some_and(|(first, path)| is_domain_and_port(first) && is_path(path))
}

/// `[a-z0-9]+ ( ("." | "_" | "__" | "-"+) [a-z0-9]+ )*`, components joined by '/'.
fn is_path(path: &str) -> bool {
    path.split('/').all(is_path_component)
}

/// One path component (no '/').
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        // One run of [a-z0-9]+.
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // A separator: ".", "_", "__" or "-"+.
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `host [":" port]` where host is a domain name or a bracketed IPv6 literal.
fn is_domain_and_port(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    host.is_empty() && s.starts_with('[') || is_domain_name(host)
}

/// Labels of `[a-zA-Z0-9]` and inner '-', joined by '.'.
fn is_domain_name(host: &str) -> bool {
    host.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

/// `[A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}`.
fn is_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && word(b[0])
        && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// `algorithm ":" hex{32,}` with the hex length the algorithm calls for (sha256/384/512).
fn check_digest(d: &str) -> std::result::Result<(), String> {
    let invalid = || "invalid checksum digest format".to_string();
    let (algo, hex) = d.split_once(':').ok_or_else(invalid)?;
    let algo_ok = algo.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    if !algo_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let want = match algo {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => return Err(format!("unsupported digest algorithm {other:?}")),
    };
    if hex.len() != want {
        return Err(format!(
            "invalid checksum digest length: {algo} takes {want} hex digits, not {}",
            hex.len()
        ));
    }
    Ok(())
}

/// Whether `host[:port]` names this machine's loopback interface.
pub fn is_loopback_host(host_port: &str) -> bool {
    let host = split_host(host_port);
    if host == "localhost" {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host part of `host[:port]`, without IPv6 brackets.
fn split_host(host_port: &str) -> &str {
    if let Some(rest) = host_port.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host_port.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host_port,
    }
}

/// Normalises what a user types as a registry name for login/logout (`docker.io`,
/// `https://index.docker.io/v1/`, `localhost:5000/`) to the registry name used in references.
pub fn normalize_registry_name(input: &str) -> String {
    let s = input
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let s = s.split('/').next().unwrap_or(s);
    match s {
        "index.docker.io" | "registry-1.docker.io" | "" => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self> {
        ImageRef::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn docker_hub_short_names_are_normalised() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.endpoint_host(), "registry-1.docker.io");
        let r = ImageRef::parse("user/app:1.0").unwrap();
        assert_eq!(r.to_string(), "docker.io/user/app:1.0");
        let r = ImageRef::parse("index.docker.io/library/alpine").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
    }

    #[test]
    fn host_port_paths_and_digests() {
        let r = ImageRef::parse("localhost:5000/team/app:v2").unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "team/app");
        assert_eq!(r.tag(), Some("v2"));
        assert!(r.is_loopback_registry());
        let r = ImageRef::parse(&format!("ghcr.io/o/app@sha256:{HEX}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.manifest_reference(), format!("sha256:{HEX}"));
        assert!(!r.is_loopback_registry());
        let r = ImageRef::parse(&format!("127.0.0.9:1/a:t@sha256:{HEX}")).unwrap();
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.manifest_reference(), format!("sha256:{HEX}"));
        assert_eq!(r.to_string(), format!("127.0.0.9:1/a:t@sha256:{HEX}"));
        assert!(r.is_loopback_registry());
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "",
            "UPPER/case",
            "a@sha256:abc",
            "a@md5:0123",
            &format!("a@sha256:{}", "G".repeat(64)),
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// (input, registry, repository, tag, digest hex) of references Docker accepts.
    const GOOD: &[(&str, &str, &str, Option<&str>, bool)] = &[
        (
            "busybox",
            "docker.io",
            "library/busybox",
            Some("latest"),
            false,
        ),
        (
            "test.com:tag",
            "docker.io",
            "library/test.com",
            Some("tag"),
            false,
        ),
        (
            "test.com:5000",
            "docker.io",
            "library/test.com",
            Some("5000"),
            false,
        ),
        (
            "localhost:5000",
            "docker.io",
            "library/localhost",
            Some("5000"),
            false,
        ),
        ("test.com/repo:tag", "test.com", "repo", Some("tag"), false),
        ("test:5000/repo", "test:5000", "repo", Some("latest"), false),
        ("localhost/repo", "localhost", "repo", Some("latest"), false),
        (
            "localhost:5000/a/b/c:v",
            "localhost:5000",
            "a/b/c",
            Some("v"),
            false,
        ),
        (
            "lowercase:Uppercase",
            "docker.io",
            "library/lowercase",
            Some("Uppercase"),
            false,
        ),
        (
            "Registry.Example.COM/app",
            "Registry.Example.COM",
            "app",
            Some("latest"),
            false,
        ),
        (
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            "sub-dom1.foo.com",
            "bar/baz/quux",
            Some("some-long-tag"),
            false,
        ),
        (
            "b.gcr.io/test.example.com/my-app:test.example.com",
            "b.gcr.io",
            "test.example.com/my-app",
            Some("test.example.com"),
            false,
        ),
        (
            "xn--n3h.com/myimage:xn--n3h.com",
            "xn--n3h.com",
            "myimage",
            Some("xn--n3h.com"),
            false,
        ),
        (
            "foo_bar.com:8080",
            "docker.io",
            "library/foo_bar.com",
            Some("8080"),
            false,
        ),
        (
            "foo/foo_bar.com:8080",
            "docker.io",
            "foo/foo_bar.com",
            Some("8080"),
            false,
        ),
        (
            "a__b/c---d.e_f",
            "docker.io",
            "a__b/c---d.e_f",
            Some("latest"),
            false,
        ),
        (
            "opensuse/leap:15.3",
            "docker.io",
            "opensuse/leap",
            Some("15.3"),
            false,
        ),
        (
            "index.docker.io/user/app",
            "docker.io",
            "user/app",
            Some("latest"),
            false,
        ),
        (
            "docker.io/alpine",
            "docker.io",
            "library/alpine",
            Some("latest"),
            false,
        ),
        (
            "registry-1.docker.io/alpine",
            "registry-1.docker.io",
            "alpine",
            Some("latest"),
            false,
        ),
        ("[::1]:5000/app:1", "[::1]:5000", "app", Some("1"), false),
        ("[::1]/app", "[::1]", "app", Some("latest"), false),
        (
            "[fe80::1:AbCd]:443/x/y",
            "[fe80::1:AbCd]:443",
            "x/y",
            Some("latest"),
            false,
        ),
        (
            "127.0.0.1:5000/app@sha256:HEX",
            "127.0.0.1:5000",
            "app",
            None,
            true,
        ),
        (
            "test:5000/repo:tag@sha256:HEX",
            "test:5000",
            "repo",
            Some("tag"),
            true,
        ),
        ("app@sha256:HEX", "docker.io", "library/app", None, true),
        ("tagok:_x", "docker.io", "library/tagok", Some("_x"), false),
    ];

    #[test]
    fn docker_grammar_accepts_and_normalises() {
        for &(input, registry, repository, tag, has_digest) in GOOD {
            let input = input.replace("HEX", HEX);
            let r = ImageRef::parse(&input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(r.registry(), registry, "{input}");
            assert_eq!(r.repository(), repository, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            let want_digest = has_digest.then(|| format!("sha256:{HEX}"));
            assert_eq!(r.digest().map(|d| d.to_string()), want_digest, "{input}");
        }
    }

    #[test]
    fn docker_grammar_refuses_with_the_reason() {
        let tag128 = format!("app:{}", "t".repeat(128));
        assert_eq!(ImageRef::parse(&tag128).unwrap().tag().unwrap().len(), 128);
        let name255 = format!("a/{}", "b".repeat(253));
        assert!(ImageRef::parse(&name255).is_ok());
        for (input, reason) in [
            (String::new(), "at least one component"),
            ("UPPER/case".into(), "must be lowercase"),
            ("localhost:5000/Team/app".into(), "must be lowercase"),
            ("App".into(), "must be lowercase"),
            (format!("app:{}", "t".repeat(129)), "longer than 128"),
            (format!("a/{}", "b".repeat(254)), "not be more than 255"),
            (":justtag".into(), "invalid reference format"),
            (format!("@sha256:{HEX}"), "invalid reference format"),
            ("a:".into(), "invalid reference format"),
            ("a:-tag".into(), "invalid reference format"),
            ("a:t@g".into(), "invalid checksum digest format"),
            ("a/".into(), "invalid reference format"),
            ("/a".into(), "invalid reference format"),
            ("a//b".into(), "invalid reference format"),
            ("a-/b".into(), "invalid reference format"),
            ("a.-b".into(), "invalid reference format"),
            ("a___b".into(), "invalid reference format"),
            ("-a".into(), "invalid reference format"),
            ("a b".into(), "invalid reference format"),
            (format!("a:{}", "é".repeat(100)), "invalid reference format"),
            ("é/a".into(), "invalid reference format"),
            ("host:port/app".into(), "invalid reference format"),
            ("-host.com/app".into(), "invalid reference format"),
            ("host..com/app".into(), "invalid reference format"),
            ("[::1/app".into(), "invalid reference format"),
            ("[]:5000/app".into(), "invalid reference format"),
            ("[::g]/app".into(), "invalid reference format"),
            ("[::1]x/app".into(), "invalid reference format"),
            ("[::1]:/app".into(), "invalid reference format"),
            ("a@sha256:abc".into(), "invalid checksum digest format"),
            ("a@md5:0123".into(), "invalid checksum digest format"),
            (
                format!("a@md5:{}", "0".repeat(32)),
                "unsupported digest algorithm",
            ),
            (
                format!("a@sha256:{}", "a".repeat(63)),
                "invalid checksum digest length",
            ),
            (
                format!("a@sha256:{}", "G".repeat(64)),
                "invalid checksum digest format",
            ),
            (format!("a@sha256:{}", "A".repeat(64)), "malformed digest"),
            (format!("a@sha512:{}", "a".repeat(128)), "only sha256"),
            (
                format!("a@1sha:{}", "a".repeat(64)),
                "invalid checksum digest format",
            ),
            (
                format!("a@sha256:{HEX}@x"),
                "invalid checksum digest format",
            ),
            (HEX.to_string(), "64-byte hexadecimal"),
        ] {
            let err = ImageRef::parse(&input).expect_err(&input).to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
            assert!(err.contains("[HOST[:PORT]/]NAME"), "{input:?}: {err}");
        }
        // A 64-hex name with a tag or a registry is a name, as in Docker.
        assert!(ImageRef::parse(&format!("{HEX}:1")).is_ok());
        assert!(ImageRef::parse(&format!("localhost/{HEX}")).is_ok());
    }

    /// The grammar agrees with oci-spec's regex-based parser (which has no IPv6 hosts) on every
    /// reference both can read.
    #[test]
    fn agrees_with_the_regex_parser() {
        use oci_spec::distribution::Reference;
        let hex512 = "f".repeat(128);
        let mut inputs: Vec<String> = GOOD.iter().map(|g| g.0.replace("HEX", HEX)).collect();
        inputs.extend(
            [
                "a:-x",
                "a:.x",
                "a.b.c/d:e",
                "a-b-c.com:1/x",
                "x:1/y:2",
                "UP.com/a",
                "a/B",
                "a@sha256:zz",
                "1.2.3.4/a",
                "a..b/c",
                "a.b_c/d",
                "sha256:x",
                "a:b:c",
                "busybox:1.36",
                "library/busybox",
                "a/b/c/d:v1.2.3-rc_4",
                "Busybox",
                "busybox:",
                ":tag",
                "busybox::tag",
                "busybox:.tag",
                "busybox:ta g",
                "/busybox",
                "busybox/",
                "a/_b",
                "a/b-",
                "a/b.",
                "registry-.io/app",
                "host:/app",
                "",
                " ",
                "a@",
                "a@sha256",
                "UPPER.example.com/app",
                "my-registry.io/my_repo/sub__name",
                "registry.example.com:443/a/b",
                "x--y/z",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        inputs.push(format!("a@sha512:{hex512}"));
        inputs.push(format!("busybox@SHA256:{HEX}"));
        inputs.push(format!("busybox:1.36@sha256:{HEX}"));
        inputs.push(format!("a:{}", "x".repeat(128)));
        inputs.push(format!("a:{}", "x".repeat(129)));
        for input in inputs.iter().filter(|s| !s.contains('[')) {
            let ours = split_reference(input);
            let theirs = Reference::try_from(input.as_str());
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{input:?}: {ours:?} / {theirs:?}"
            );
            if let (Ok(o), Ok(t)) = (ours, theirs) {
                assert_eq!(
                    (
                        o.registry.as_str(),
                        o.repository.as_str(),
                        o.tag.or(o.digest.is_none().then_some("latest")),
                        o.digest
                    ),
                    (t.registry(), t.repository(), t.tag(), t.digest()),
                    "{input:?}"
                );
            }
        }
    }

    #[test]
    fn registry_names_for_login() {
        assert_eq!(
            normalize_registry_name("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_registry_name("localhost:5000/"), "localhost:5000");
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("10.0.0.1:5000"));
    }
}
