//! rbuild-builder: Dockerfile parsing, expansion, planning, build cache and execution.
#![warn(missing_docs)]
pub mod cache;
pub mod context;
pub mod dockerfile;
pub mod dockerignore;
pub mod exec;
pub mod pipeline;
