//! rbuild-builder: Dockerfile parsing, expansion, planning, build cache and execution.
#![warn(missing_docs)]
pub mod pipeline;
pub mod context;
pub mod cache;
pub mod dockerfile;
pub mod exec;
pub mod dockerignore;
