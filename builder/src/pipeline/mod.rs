//! `rbuild.yaml` pipelines: the file model, its validation into a build plan, and a DAG scheduler
//! that builds independent images in parallel.

mod model;
mod plan;
mod schedule;

pub use model::{CacheSpec, ImageSpec, PipelineFile};
pub use plan::{load_plan, PipelineError, Plan, PlannedImage};
pub use schedule::{run_dag, ImageOutcome, OutcomeStatus};
