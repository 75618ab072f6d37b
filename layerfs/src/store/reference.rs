//! Local image names: docker-style normalisation of `name[:tag]` so that `busybox`,
//! `busybox:latest` and `docker.io/library/busybox:latest` name the same tag.

use super::error::{Result, StoreError};

/// Normalises `name[:tag]` to `name:tag` (default tag `latest`, docker.io prefixes dropped).
/// Rejects names that docker would reject, and digests (`name@sha256:...`) which are not tags.
pub fn normalize_tag(input: &str) -> Result<String> {
    let bad = |why| StoreError::InvalidReference(input.to_string(), why);
    if input.is_empty() {
        return Err(bad("the name is empty"));
    }
    if input.contains('@') {
        return Err(bad("a digest reference cannot be used as a tag"));
    }
    let last_slash = input.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match input[last_slash..].rfind(':') {
        Some(i) => (&input[..last_slash + i], &input[last_slash + i + 1..]),
        None => (input, "latest"),
    };
    let name = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("index.docker.io/library/"))
        .or_else(|| name.strip_prefix("docker.io/"))
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .unwrap_or(name);
    let name = name.strip_prefix("library/").unwrap_or(name);
    if tag.is_empty() || tag.len() > 128 {
        return Err(bad("the tag must be 1 to 128 characters"));
    }
    if !tag
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        || tag.starts_with(['.', '-'])
    {
        return Err(bad(
            "the tag may only hold letters, digits, '_', '.' and '-'",
        ));
    }
    if name.is_empty() || name.len() > 255 {
        return Err(bad("the name must be 1 to 255 characters"));
    }
    let mut components = name.split('/').peekable();
    let mut first = true;
    while let Some(comp) = components.next() {
        let is_host = first
            && components.peek().is_some()
            && (comp.contains('.') || comp.contains(':') || comp == "localhost");
        first = false;
        let ok = if is_host {
            !comp.is_empty()
                && comp
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
        } else {
            valid_path_component(comp)
        };
        if !ok {
            return Err(bad(
                "name components must be lowercase letters, digits and single separators (. _ __ -)",
            ));
        }
    }
    Ok(format!("{name}:{tag}"))
}

fn valid_path_component(comp: &str) -> bool {
    let b = comp.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    b.iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
        && !comp.contains("..")
        && !comp.contains("___")
}

/// Splits a normalised `name:tag` into repository and tag.
pub fn split_tag(tagged: &str) -> (&str, &str) {
    let last_slash = tagged.rfind('/').map_or(0, |i| i + 1);
    match tagged[last_slash..].rfind(':') {
        Some(i) => (&tagged[..last_slash + i], &tagged[last_slash + i + 1..]),
        None => (tagged, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        assert_eq!(normalize_tag("busybox").unwrap(), "busybox:latest");
        assert_eq!(normalize_tag("busybox:1.36").unwrap(), "busybox:1.36");
        assert_eq!(
            normalize_tag("docker.io/library/busybox:latest").unwrap(),
            "busybox:latest"
        );
        assert_eq!(
            normalize_tag("localhost:5000/team/app").unwrap(),
            "localhost:5000/team/app:latest"
        );
        assert_eq!(
            split_tag("localhost:5000/team/app:1"),
            ("localhost:5000/team/app", "1")
        );
        for bad in [
            "",
            "Busybox",
            "a@sha256:00",
            "a:b:c",
            "a/../b",
            "a:",
            "-a",
            "a:.x",
        ] {
            assert!(normalize_tag(bad).is_err(), "{bad} must be rejected");
        }
    }
}
