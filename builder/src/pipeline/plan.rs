//! Validation of a pipeline file into a build plan: resolved paths, checked dependencies, a
//! topological order, and the subset needed for the images the user asked for.

use super::model::{CacheSpec, PipelineFile};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A pipeline file that cannot be used, naming the file, the image and the key.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The file could not be read.
    #[error("{path}: cannot read pipeline file: {source}")]
    Read {
        /// The pipeline file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The YAML does not match the expected shape.
    #[error("{path}: {message}")]
    Syntax {
        /// The pipeline file.
        path: PathBuf,
        /// Parser message, with line and column.
        message: String,
    },
    /// A value is wrong.
    #[error("{path}: image {image:?}: {key}: {message}")]
    Invalid {
        /// The pipeline file.
        path: PathBuf,
        /// The image whose entry is wrong.
        image: String,
        /// The key within the image entry.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The dependencies form a cycle.
    #[error("{path}: depends_on forms a cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// The pipeline file.
        path: PathBuf,
        /// The images on the cycle, first repeated last.
        cycle: Vec<String>,
    },
    /// An image named on the command line is not in the file.
    #[error("{path}: no image {image:?} in the pipeline (it has: {known})")]
    UnknownImage {
        /// The pipeline file.
        path: PathBuf,
        /// The unknown name.
        image: String,
        /// The names the file has.
        known: String,
    },
}

/// One image ready to build.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlannedImage {
    /// Pipeline-local name.
    pub name: String,
    /// Absolute build context.
    pub context: PathBuf,
    /// Absolute Dockerfile path.
    pub dockerfile: PathBuf,
    /// Stage to stop at.
    pub target: Option<String>,
    /// Build arguments.
    pub args: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Pipeline images built before this one.
    pub depends_on: Vec<String>,
    /// Tags for the result.
    pub tags: Vec<String>,
}

/// A validated pipeline: images in a dependency-respecting order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    /// The pipeline file.
    pub file: PathBuf,
    /// Images in topological order (every image after its dependencies).
    pub images: Vec<PlannedImage>,
    /// Shared cache settings.
    pub cache: CacheSpec,
}

impl Plan {
    /// The image with this name.
    pub fn image(&self, name: &str) -> Option<&PlannedImage> {
        self.images.iter().find(|i| i.name == name)
    }
}

/// Reads and validates `path`; `only` limits the plan to those images and what they depend on.
pub fn load_plan(path: &Path, only: &[String]) -> Result<Plan, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: PipelineFile = serde_norway::from_str(&text).map_err(|e| PipelineError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    plan_from(path, &base, file, only)
}

fn plan_from(
    path: &Path,
    base: &Path,
    file: PipelineFile,
    only: &[String],
) -> Result<Plan, PipelineError> {
    let invalid = |image: &str, key: &str, message: String| PipelineError::Invalid {
        path: path.to_path_buf(),
        image: image.to_string(),
        key: key.to_string(),
        message,
    };
    if file.images.is_empty() {
        return Err(PipelineError::Syntax {
            path: path.to_path_buf(),
            message: "images: the pipeline names no image".into(),
        });
    }
    let mut planned = BTreeMap::new();
    for (name, spec) in &file.images {
        for dep in &spec.depends_on {
            if !file.images.contains_key(dep) {
                return Err(invalid(
                    name,
                    "depends_on",
                    format!("no image {dep:?} in the pipeline"),
                ));
            }
            if dep == name {
                return Err(invalid(
                    name,
                    "depends_on",
                    "an image cannot depend on itself".into(),
                ));
            }
        }
        let context = base.join(&spec.context);
        if !context.is_dir() {
            return Err(invalid(
                name,
                "context",
                format!("{} is not a directory", context.display()),
            ));
        }
        let dockerfile = context.join(
            spec.dockerfile
                .as_deref()
                .unwrap_or(Path::new("Dockerfile")),
        );
        if !dockerfile.is_file() {
            return Err(invalid(
                name,
                "dockerfile",
                format!("{} does not exist", dockerfile.display()),
            ));
        }
        for (k, _) in spec.args.iter().chain(spec.labels.iter()) {
            if k.is_empty() || k.contains('=') {
                return Err(invalid(name, "args/labels", format!("bad key {k:?}")));
            }
        }
        planned.insert(
            name.clone(),
            PlannedImage {
                name: name.clone(),
                context,
                dockerfile,
                target: spec.target.clone(),
                args: spec.args.clone(),
                labels: spec.labels.clone(),
                depends_on: spec.depends_on.clone(),
                tags: spec.tags.clone(),
            },
        );
    }
    let wanted = wanted_images(path, &planned, only)?;
    let order = topological_order(path, &planned)?;
    Ok(Plan {
        file: path.to_path_buf(),
        images: order
            .into_iter()
            .filter(|n| wanted.contains(n))
            .map(|n| planned.remove(&n).expect("ordered names come from the map"))
            .collect(),
        cache: file.cache.unwrap_or_default(),
    })
}

/// The requested images plus everything they depend on (all images when none is requested).
fn wanted_images(
    path: &Path,
    planned: &BTreeMap<String, PlannedImage>,
    only: &[String],
) -> Result<BTreeSet<String>, PipelineError> {
    if only.is_empty() {
        return Ok(planned.keys().cloned().collect());
    }
    let mut wanted = BTreeSet::new();
    let mut todo: Vec<String> = only.to_vec();
    while let Some(name) = todo.pop() {
        let Some(img) = planned.get(&name) else {
            return Err(PipelineError::UnknownImage {
                path: path.to_path_buf(),
                image: name,
                known: planned.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        };
        if wanted.insert(name) {
            todo.extend(img.depends_on.iter().cloned());
        }
    }
    Ok(wanted)
}

/// Depth-first topological sort that reports a cycle by its members.
fn topological_order(
    path: &Path,
    planned: &BTreeMap<String, PlannedImage>,
) -> Result<Vec<String>, PipelineError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        name: &str,
        planned: &BTreeMap<String, PlannedImage>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), Vec<String>> {
        match marks[name] {
            Mark::Done => return Ok(()),
            Mark::Active => {
                let start = stack.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(name.to_string());
                return Err(cycle);
            }
            Mark::New => {}
        }
        marks.insert(name.to_string(), Mark::Active);
        stack.push(name.to_string());
        for dep in &planned[name].depends_on {
            visit(dep, planned, marks, stack, out)?;
        }
        stack.pop();
        marks.insert(name.to_string(), Mark::Done);
        out.push(name.to_string());
        Ok(())
    }
    let mut marks: BTreeMap<String, Mark> =
        planned.keys().map(|k| (k.clone(), Mark::New)).collect();
    let mut out = Vec::new();
    for name in planned.keys() {
        visit(name, planned, &mut marks, &mut Vec::new(), &mut out).map_err(|cycle| {
            PipelineError::Cycle {
                path: path.to_path_buf(),
                cycle,
            }
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(yaml: &str, dirs: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        for d in dirs {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("Dockerfile"), "FROM scratch\n").unwrap();
        }
        let path = dir.path().join("rbuild.yaml");
        std::fs::write(&path, yaml).unwrap();
        (dir, path)
    }

    #[test]
    fn orders_dependencies_first_and_resolves_paths() {
        let (dir, path) = project(
            "images:\n  app:\n    context: app\n    depends_on: [base]\n    args: {VERSION: \"7\"}\n  base:\n    context: base\n    tags: [r/base:1]\n  tool:\n    context: tool\ncache:\n  to: r/cache\n",
            &["app", "base", "tool"],
        );
        let plan = load_plan(&path, &[]).unwrap();
        let names: Vec<_> = plan.images.iter().map(|i| i.name.as_str()).collect();
        let pos = |n| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("base") < pos("app"));
        assert_eq!(names.len(), 3);
        let app = plan.image("app").unwrap();
        assert_eq!(app.dockerfile, dir.path().join("app/Dockerfile"));
        assert_eq!(app.args["VERSION"], "7");
        assert_eq!(plan.cache.to.as_deref(), Some("r/cache"));
    }

    #[test]
    fn selecting_an_image_brings_its_dependencies_only() {
        let (_dir, path) = project(
            "images:\n  app: {context: app, depends_on: [base]}\n  base: {context: base}\n  tool: {context: tool}\n",
            &["app", "base", "tool"],
        );
        let plan = load_plan(&path, &["app".to_string()]).unwrap();
        let names: Vec<_> = plan.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["base", "app"]);
        let err = load_plan(&path, &["nope".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no image \"nope\""), "{err}");
    }

    #[test]
    fn errors_name_file_image_and_key() {
        let (_d, path) = project(
            "images:\n  app: {context: app, depends_on: [ghost]}\n",
            &["app"],
        );
        let err = load_plan(&path, &[]).unwrap_err().to_string();
        assert!(
            err.contains("rbuild.yaml")
                && err.contains("\"app\"")
                && err.contains("depends_on")
                && err.contains("ghost"),
            "{err}"
        );

        let (_d, path) = project("images:\n  app: {context: missing}\n", &[]);
        let err = load_plan(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("\"app\": context:"), "{err}");

        let (_d, path) = project(
            "images:\n  app: {context: app, dockerfile: x.Dockerfile}\n",
            &["app"],
        );
        let err = load_plan(&path, &[]).unwrap_err().to_string();
        assert!(
            err.contains("dockerfile") && err.contains("x.Dockerfile"),
            "{err}"
        );

        let (_d, path) = project("images:\n  app: {context: app, colour: red}\n", &["app"]);
        let err = load_plan(&path, &[]).unwrap_err().to_string();
        assert!(
            err.contains("unknown field `colour`") && err.contains("line"),
            "{err}"
        );
    }

    #[test]
    fn cycles_are_reported_with_their_members() {
        let (_d, path) = project(
            "images:\n  a: {context: a, depends_on: [b]}\n  b: {context: b, depends_on: [c]}\n  c: {context: c, depends_on: [a]}\n",
            &["a", "b", "c"],
        );
        let err = load_plan(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("cycle: a -> b -> c -> a"), "{err}");
    }
}
