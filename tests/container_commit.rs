//! `rbuild commit`: a container's changes become exactly one new layer.

mod common;

use common::{poll_until, TestRoot};

/// Removes every container of the store on drop (also when an assertion failed), so no
/// container process, cgroup or mount outlives the test.
struct RemoveContainers<'a>(&'a TestRoot);

impl Drop for RemoveContainers<'_> {
    fn drop(&mut self) {
        let out = self.0.rbuild(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = self.0.rbuild(&["rm", "-f", id]);
        }
    }
}

#[test]
fn commit_records_exactly_the_deleted_and_added_files() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    root.ok(&[
        "run",
        "--name",
        "c1",
        "bb",
        "sh",
        "-c",
        "rm /etc/group; mkdir -p /srv/new; echo data > /srv/new/file; echo more >> /etc/passwd",
    ]);
    let id = root
        .ok(&["commit", "c1", "committed:v1"])
        .trim()
        .to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    let v: serde_json::Value =
        serde_json::from_str(&root.ok(&["inspect", "committed:v1"])).unwrap();
    let layers = v[0]["RootFS"]["Layers"].as_array().unwrap().clone();
    let base: serde_json::Value = serde_json::from_str(&root.ok(&["inspect", "bb"])).unwrap();
    let base_layers = base[0]["RootFS"]["Layers"].as_array().unwrap().clone();
    assert_eq!(layers.len(), base_layers.len() + 1);
    assert_eq!(layers[..base_layers.len()], base_layers[..]);
    // The new layer, unpacked in the store, holds only the changes.
    let diff_id = layers.last().unwrap().as_str().unwrap();
    let dir = root
        .path()
        .join("layers")
        .join(diff_id.trim_start_matches("sha256:"));
    let mut entries: Vec<String> = walkdir::WalkDir::new(&dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(&dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            "etc",
            "etc/group",
            "etc/passwd",
            "srv",
            "srv/new",
            "srv/new/file"
        ],
        "{entries:?}"
    );
    // A container of the new image sees the changes.
    let out = root.ok(&[
        "run",
        "--rm",
        "committed:v1",
        "sh",
        "-c",
        "cat /srv/new/file; test -e /etc/group || echo no-group; tail -n 1 /etc/passwd",
    ]);
    assert_eq!(out, "data\nno-group\nmore\n");
    root.ok(&["rm", "c1"]);
}

#[test]
fn commit_of_a_running_container_pauses_it_and_lets_it_run_on() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    root.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "bb",
        "sh",
        "-c",
        "echo ready > /ready; i=0; while true; do i=$((i+1)); echo $i > /counter; done",
    ]);
    assert!(
        root.wait_for_success(&["exec", "busy", "test", "-e", "/ready"]),
        "the container started"
    );
    let out = root.rbuild(&["commit", "busy", "busy:snap"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("without pausing"), "{stderr}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    // Thawed again: an exec (which joins the cgroup) runs and the loop goes on.
    let first = root.ok(&["exec", "busy", "cat", "/counter"]);
    let moved = poll_until(500, || {
        root.ok(&["exec", "busy", "cat", "/counter"]) != first
    });
    assert!(moved, "the container runs on after the commit");
    let out = root.ok(&["run", "--rm", "busy:snap", "cat", "/ready"]);
    assert_eq!(out.trim(), "ready");
}
