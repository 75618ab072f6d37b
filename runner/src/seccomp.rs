//! The seccomp filter installed right before execve (after no_new_privs): a deny list of the
//! kernel interfaces docker's default profile also refuses and capabilities do not gate, answered
//! with EPERM; clone3 answers ENOSYS (its flags cannot be inspected) so libc falls back to clone.
//! ptrace stays allowed, as in docker on kernels >= 4.8.

use crate::error::{Result, RunnerError};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// Syscalls refused outright (name, number).
pub const DENIED: &[(&str, libc::c_long)] = &[
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("bpf", libc::SYS_bpf),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
];

/// Syscalls refused when their first argument (the flags) asks for a new user namespace.
pub const DENIED_WITH_NEWUSER: &[(&str, libc::c_long)] =
    &[("unshare", libc::SYS_unshare), ("clone", libc::SYS_clone)];

/// The x32 ABI's syscall numbers are the x86_64 ones with this bit set (same audit arch).
#[cfg(target_arch = "x86_64")]
const X32_BIT: i64 = 0x4000_0000;

fn error(e: impl std::fmt::Display) -> RunnerError {
    RunnerError::Setup(format!("seccomp filter: {e}"))
}

/// Every number a syscall can be reached by on this architecture.
fn numbers(nr: libc::c_long) -> Vec<i64> {
    #[cfg(target_arch = "x86_64")]
    return vec![nr, nr | X32_BIT];
    #[cfg(not(target_arch = "x86_64"))]
    return vec![nr];
}

fn arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(error)
}

/// Compiles the filters: the deny list (EPERM) and clone3 (ENOSYS).
pub fn programs() -> Result<Vec<BpfProgram>> {
    let arch = arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in DENIED {
        for n in numbers(*nr) {
            rules.insert(n, Vec::new());
        }
    }
    let newuser = libc::CLONE_NEWUSER as u64;
    for (_, nr) in DENIED_WITH_NEWUSER {
        let cond = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(newuser),
            newuser,
        )
        .map_err(error)?;
        let rule = SeccompRule::new(vec![cond]).map_err(error)?;
        for n in numbers(*nr) {
            rules.insert(n, vec![rule.clone()]);
        }
    }
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(error)?;
    let clone3: BTreeMap<i64, Vec<SeccompRule>> = numbers(libc::SYS_clone3)
        .into_iter()
        .map(|n| (n, Vec::new()))
        .collect();
    let clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(error)?;
    Ok(vec![
        deny.try_into().map_err(error)?,
        clone3.try_into().map_err(error)?,
    ])
}

/// Installs the filters in the calling thread (no_new_privs must be set).
pub fn install() -> Result<()> {
    for p in programs()? {
        seccompiler::apply_filter(&p).map_err(error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_compile_for_this_architecture() {
        let progs = super::programs().unwrap();
        assert_eq!(progs.len(), 2);
        assert!(progs.iter().all(|p| !p.is_empty()));
    }
}
