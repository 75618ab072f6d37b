//! Runs a plan's builds as a DAG: an image starts once all its dependencies succeeded, independent
//! images run in parallel, and an image whose dependency failed is skipped (the others go on).

use super::plan::{Plan, PlannedImage};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How one image of the pipeline ended.
#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeStatus<T> {
    /// Built; carries the build function's result.
    Built(T),
    /// The build function failed with this message.
    Failed(String),
    /// Not built because these dependencies did not build.
    Skipped(Vec<String>),
}

/// One image's outcome with its wall time.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOutcome<T> {
    /// Pipeline-local image name.
    pub name: String,
    /// What happened.
    pub status: OutcomeStatus<T>,
    /// Time spent building (zero when skipped).
    pub elapsed: Duration,
}

/// Builds every image of `plan` with `build`, at most `parallelism` at a time, and returns the
/// outcomes in plan order.
pub fn run_dag<T, F>(plan: &Plan, parallelism: usize, build: F) -> Vec<ImageOutcome<T>>
where
    T: Send,
    F: Fn(&PlannedImage) -> Result<T, String> + Sync,
{
    let parallelism = parallelism.max(1);
    let mut done: BTreeMap<String, ImageOutcome<T>> = BTreeMap::new();
    let mut running: BTreeSet<String> = BTreeSet::new();
    let (tx, rx) = mpsc::channel::<(String, Result<T, String>, Duration)>();
    std::thread::scope(|scope| loop {
        for img in &plan.images {
            if done.contains_key(&img.name) || running.contains(&img.name) {
                continue;
            }
            if img.depends_on.iter().any(|d| !done.contains_key(d)) {
                continue; // a dependency is still pending or running
            }
            let failed: Vec<String> = img
                .depends_on
                .iter()
                .filter(|d| !matches!(done[*d].status, OutcomeStatus::Built(_)))
                .cloned()
                .collect();
            if !failed.is_empty() {
                let outcome = ImageOutcome {
                    name: img.name.clone(),
                    status: OutcomeStatus::Skipped(failed),
                    elapsed: Duration::ZERO,
                };
                done.insert(img.name.clone(), outcome);
                continue;
            }
            if running.len() >= parallelism {
                continue;
            }
            running.insert(img.name.clone());
            let tx = tx.clone();
            let build = &build;
            scope.spawn(move || {
                let start = Instant::now();
                let result = build(img);
                let _ = tx.send((img.name.clone(), result, start.elapsed()));
            });
        }
        if running.is_empty() {
            break;
        }
        let (name, result, elapsed) = rx.recv().expect("a running build always reports");
        running.remove(&name);
        let status = match result {
            Ok(v) => OutcomeStatus::Built(v),
            Err(e) => OutcomeStatus::Failed(e),
        };
        done.insert(
            name.clone(),
            ImageOutcome {
                name,
                status,
                elapsed,
            },
        );
    });
    plan.images
        .iter()
        .filter_map(|i| done.remove(&i.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::CacheSpec;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    fn image(name: &str, deps: &[&str]) -> PlannedImage {
        PlannedImage {
            name: name.into(),
            context: "/".into(),
            dockerfile: "/Dockerfile".into(),
            target: None,
            args: Default::default(),
            labels: Default::default(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            tags: vec![],
        }
    }

    fn plan(images: Vec<PlannedImage>) -> Plan {
        Plan {
            file: "rbuild.yaml".into(),
            images,
            cache: CacheSpec::default(),
        }
    }

    #[test]
    fn dependencies_finish_before_dependents_start() {
        let p = plan(vec![
            image("base", &[]),
            image("tool", &[]),
            image("app", &["base"]),
        ]);
        let log = Mutex::new(Vec::new());
        let out = run_dag(&p, 2, |img| {
            log.lock().unwrap().push(format!("start {}", img.name));
            std::thread::sleep(Duration::from_millis(20));
            log.lock().unwrap().push(format!("end {}", img.name));
            Ok(img.name.len())
        });
        let log = log.into_inner().unwrap();
        let at = |s: &str| log.iter().position(|l| l == s).unwrap();
        assert!(at("end base") < at("start app"), "{log:?}");
        assert!(out
            .iter()
            .all(|o| matches!(o.status, OutcomeStatus::Built(_))));
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn independent_images_run_in_parallel_up_to_the_limit() {
        let p = plan(vec![image("a", &[]), image("b", &[]), image("c", &[])]);
        let now = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        run_dag(&p, 2, |_| {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(30));
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        });
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failure_skips_dependents_but_not_others() {
        let p = plan(vec![
            image("base", &[]),
            image("app", &["base"]),
            image("top", &["app"]),
            image("tool", &[]),
        ]);
        let out = run_dag(&p, 2, |img| {
            if img.name == "base" {
                Err("RUN failed".to_string())
            } else {
                Ok(())
            }
        });
        let status = |n: &str| &out.iter().find(|o| o.name == n).unwrap().status;
        assert_eq!(status("base"), &OutcomeStatus::Failed("RUN failed".into()));
        assert_eq!(status("app"), &OutcomeStatus::Skipped(vec!["base".into()]));
        assert_eq!(status("top"), &OutcomeStatus::Skipped(vec!["app".into()]));
        assert_eq!(status("tool"), &OutcomeStatus::Built(()));
    }
}
