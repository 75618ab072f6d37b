//! rbuild-builder: Dockerfile parsing, expansion, planning, build cache and execution.
