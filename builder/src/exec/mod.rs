//! Build execution: stage planning, per-instruction execution, layers and the final image.

pub mod config;
pub mod fswrite;
