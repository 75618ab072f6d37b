//! The `rbuild.yaml` file as written by the user (serde model, no validation beyond shape).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The whole pipeline file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Images by pipeline-local name.
    pub images: BTreeMap<String, ImageSpec>,
    /// Registry-shared build cache.
    #[serde(default)]
    pub cache: Option<CacheSpec>,
}

/// One image of the pipeline.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Build context, relative to the YAML file.
    pub context: PathBuf,
    /// Dockerfile, relative to the context (default `Dockerfile`).
    #[serde(default)]
    pub dockerfile: Option<PathBuf>,
    /// Build stage to stop at.
    #[serde(default)]
    pub target: Option<String>,
    /// Build arguments.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// Labels added to the image.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Images of this pipeline that must be built first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Tags given to the built image (and pushed with `--push`).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Where the shared build cache is read from and written to.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// Registry references to import cache entries from.
    #[serde(default)]
    pub from: Vec<String>,
    /// Registry reference to export cache entries to.
    #[serde(default)]
    pub to: Option<String>,
}
