//! rbuild-runner: namespace sandbox, cgroup limits and container processes.
#![warn(missing_docs)]
