//! The hand-written reference parser agrees with oci-client's (the maintained successor of
//! oci-distribution, regex-based: used here as the grammar oracle, not in the binary, because its
//! regex costs every rbuild process tens of milliseconds at start-up).

use oci_client::Reference;
use rbuild_registry::ImageRef;

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// References both parsers must judge alike: valid ones of every shape and the usual mistakes.
fn corpus() -> Vec<String> {
    let mut refs: Vec<String> = [
        "busybox",
        "busybox:1.36",
        "library/busybox",
        "docker.io/busybox",
        "docker.io/library/busybox:latest",
        "index.docker.io/library/busybox",
        "user/repo",
        "user/repo:tag",
        "a/b/c/d:v1.2.3-rc_4",
        "localhost/app",
        "localhost:5000/app:dev",
        "127.0.0.1:5000/team/app",
        "registry.example.com/app",
        "registry.example.com:443/a/b",
        "[fe80::1%eth0]:5000/app",
        "my-registry.io/my_repo/sub__name",
        "repo.with.dots/x",
        "x--y/z",
        "a.b-c_d/e",
        "Busybox",
        "busybox:",
        ":tag",
        "busybox::tag",
        "busybox:-tag",
        "busybox:.tag",
        "busybox:ta g",
        "/busybox",
        "busybox/",
        "a//b",
        "a/_b",
        "a/b-",
        "a/b.",
        "a/b___c",
        "-registry.io/app",
        "registry-.io/app",
        "host:port/app",
        "host:/app",
        "",
        " ",
        "a@",
        "a@sha256",
        "a@sha256:abc",
        "UPPER.example.com/app",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    refs.push(format!("busybox@sha256:{HEX}"));
    refs.push(format!("busybox:1.36@sha256:{HEX}"));
    refs.push(format!("localhost:5000/a/b@sha256:{HEX}"));
    refs.push(format!("busybox@sha256:{}", &HEX[..63]));
    refs.push(format!("busybox@SHA256:{HEX}"));
    refs.push(format!("busybox:{}", "t".repeat(128)));
    refs.push(format!("busybox:{}", "t".repeat(129)));
    refs
}

/// IPv6 registry hosts: Docker's current grammar (distribution/reference 0.5+) takes them, the
/// older regex in oci-client does not. Ours follows Docker; if oci-client catches up, this test
/// says so and the cases move into the corpus.
const IPV6_HOSTS: &[&str] = &["[::1]:5000/app", "[2001:db8::1]/team/app:v1"];

#[test]
fn ipv6_registry_hosts_follow_docker_where_oci_client_lags() {
    for s in IPV6_HOSTS {
        let ours = ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert!(ours.registry().starts_with('['), "registry of {s}");
        assert!(
            Reference::try_from(*s).is_err(),
            "oci-client now accepts {s}: move it into the shared corpus"
        );
    }
}

#[test]
fn accepts_and_rejects_what_oci_client_does_and_splits_alike() {
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for s in corpus() {
        let ours = ImageRef::parse(&s);
        let theirs = Reference::try_from(s.as_str());
        match (&ours, &theirs) {
            (Ok(o), Ok(t)) => {
                assert_eq!(o.registry(), t.registry(), "registry of {s:?}");
                assert_eq!(o.repository(), t.repository(), "repository of {s:?}");
                assert_eq!(
                    o.digest().map(|d| d.to_string()).as_deref(),
                    t.digest(),
                    "digest of {s:?}"
                );
                // oci-client leaves the tag empty when only a digest is given; so do we, and
                // both mean `latest` when neither is given.
                assert_eq!(
                    o.tag().unwrap_or("latest"),
                    t.tag().unwrap_or("latest"),
                    "tag of {s:?}"
                );
            }
            (Err(_), Err(_)) => {}
            _ => mismatches.push(format!(
                "{s:?}: ours {:?}, oci-client {:?}",
                ours.as_ref()
                    .map(|r| r.to_string())
                    .map_err(|e| e.to_string()),
                theirs
                    .as_ref()
                    .map(|r| r.whole())
                    .map_err(|e| e.to_string())
            )),
        }
        checked += 1;
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    println!("{checked} references judged alike by both parsers");
}
