//! `system check`: re-hashes every blob and checks the layout, the index, every image's
//! references and the layers directory. Incomplete work of dead processes has already been
//! removed by [`Store::open`].

use super::error::{IoContext, Result};
use super::index::descriptor_digest;
use super::Store;
use crate::digest::{Digest, HashingWriter};
use std::fs;
use std::io;

/// What `system check` found.
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// Blobs re-hashed.
    pub blobs_checked: usize,
    /// Images (index entries) checked.
    pub images_checked: usize,
    /// Unpacked layers checked.
    pub layers_checked: usize,
    /// Incomplete items of dead processes removed when the store was opened.
    pub incomplete_removed: usize,
    /// Every inconsistency, one line each, naming the object.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// True when no problem was found.
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Checks the whole store; problems are collected rather than returned as errors.
    pub fn check(&self) -> Result<CheckReport> {
        let mut report = CheckReport {
            incomplete_removed: self.incomplete_removed_at_open(),
            ..CheckReport::default()
        };
        self.check_layout(&mut report);
        self.check_blobs(&mut report)?;
        self.check_images(&mut report);
        self.check_layers(&mut report)?;
        self.check_unsynced_layers(&mut report);
        Ok(report)
    }

    fn check_layout(&self, report: &mut CheckReport) {
        let layout = self.root().join("oci-layout");
        match fs::read(&layout).map(|d| serde_json::from_slice::<serde_json::Value>(&d)) {
            Ok(Ok(v))
                if v.get("imageLayoutVersion")
                    .and_then(|v| v.as_str())
                    .is_some() => {}
            _ => report.problems.push(format!(
                "{}: missing or not a valid OCI layout file",
                layout.display()
            )),
        }
    }

    fn check_blobs(&self, report: &mut CheckReport) -> Result<()> {
        let dir = self.root().join("blobs/sha256");
        for entry in fs::read_dir(&dir).at("list", &dir)? {
            let entry = entry.at("list", &dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(expected) = Digest::from_hex(&name) else {
                report
                    .problems
                    .push(format!("blobs/sha256/{name}: not a sha256 digest name"));
                continue;
            };
            if !entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                report
                    .problems
                    .push(format!("blob {expected}: not a regular file"));
                continue;
            }
            let mut hasher = HashingWriter::new(io::sink());
            let hashed =
                fs::File::open(entry.path()).and_then(|mut f| io::copy(&mut f, &mut hasher));
            report.blobs_checked += 1;
            match hashed {
                Ok(_) => {
                    let (_, actual, _) = hasher.finish();
                    if actual != expected {
                        report.problems.push(format!(
                            "blob {expected}: content hashes to {actual} (corrupt)"
                        ));
                    }
                }
                Err(e) => report
                    .problems
                    .push(format!("blob {expected}: unreadable: {e}")),
            }
        }
        Ok(())
    }

    fn check_images(&self, report: &mut CheckReport) {
        let index = match self.read_index() {
            Ok(i) => i,
            Err(e) => {
                report.problems.push(format!("index.json: {e}"));
                return;
            }
        };
        for desc in index.manifests() {
            report.images_checked += 1;
            let name = super::index::descriptor_ref_name(desc)
                .map(|n| format!("tag {n}"))
                .unwrap_or_else(|| format!("untagged image {}", desc.digest()));
            let digest = match descriptor_digest(desc) {
                Ok(d) => d,
                Err(e) => {
                    report.problems.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let size = fs::metadata(self.blob_path(&digest)).map(|m| m.len());
            match size {
                Ok(s) if s != desc.size() => report.problems.push(format!(
                    "{name}: index says manifest {digest} has {} bytes, the blob has {s}",
                    desc.size()
                )),
                Ok(_) => {}
                Err(_) => {
                    report
                        .problems
                        .push(format!("{name}: manifest blob {digest} is missing"));
                    continue;
                }
            }
            let manifest: oci_spec::image::ImageManifest =
                match self.read_blob(&digest).map(|d| serde_json::from_slice(&d)) {
                    Ok(Ok(m)) => m,
                    Ok(Err(e)) => {
                        report
                            .problems
                            .push(format!("{name}: manifest {digest} is not valid JSON: {e}"));
                        continue;
                    }
                    Err(e) => {
                        report.problems.push(format!("{name}: {e}"));
                        continue;
                    }
                };
            let mut refs = vec![manifest.config().clone()];
            refs.extend(manifest.layers().iter().cloned());
            for r in refs {
                let Ok(d) = descriptor_digest(&r) else {
                    report
                        .problems
                        .push(format!("{name}: invalid digest {}", r.digest()));
                    continue;
                };
                match fs::metadata(self.blob_path(&d)) {
                    Ok(m) if m.len() != r.size() => report.problems.push(format!(
                        "{name}: blob {d} has {} bytes, the manifest says {}",
                        m.len(),
                        r.size()
                    )),
                    Ok(_) => {}
                    Err(_) => report
                        .problems
                        .push(format!("{name}: referenced blob {d} is missing")),
                }
            }
            if let Err(e) = self.load_image(&digest) {
                if !matches!(e, super::StoreError::BlobMissing(_)) {
                    report.problems.push(format!("{name}: {e}"));
                }
            }
        }
    }

    fn check_layers(&self, report: &mut CheckReport) -> Result<()> {
        let dir = self.root().join("layers");
        for entry in fs::read_dir(&dir).at("list", &dir)? {
            let entry = entry.at("list", &dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            report.layers_checked += 1;
            if Digest::from_hex(&name).is_err() {
                report
                    .problems
                    .push(format!("layers/{name}: not a sha256 diff ID name"));
            } else if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                report
                    .problems
                    .push(format!("layers/{name}: not a directory"));
            }
        }
        Ok(())
    }

    /// Layers the journal of unsynced layers still lists from an earlier boot: the recovery at
    /// open could not re-create them, so their files may be incomplete.
    fn check_unsynced_layers(&self, report: &mut CheckReport) {
        let journal = self.unsynced_journal();
        let entries = match journal.read() {
            Ok(e) => e,
            Err(e) => {
                report.problems.push(e.to_string());
                return;
            }
        };
        let boot = super::unsynced::boot_id();
        let mut seen = std::collections::BTreeSet::new();
        for e in entries.iter().filter(|e| e.boot != boot) {
            if !self.layer_dir(&e.diff_id).exists() || !seen.insert(e.diff_id.clone()) {
                continue;
            }
            let why = if e.boot == super::unsynced::UNRECOVERED {
                format!("could not be re-created from its blob ({})", e.note)
            } else {
                format!("is listed in {} from boot {}: re-creating it from its blob failed (it is tried again at every open)", journal.path().display(), e.boot)
            };
            report.problems.push(format!(
                "layers/{}: published before an unclean shutdown or reboot and {why}; its files may be incomplete: remove the directory and pull or build the image again",
                e.diff_id.hex()
            ));
        }
    }
}
