//! Capabilities: docker's default set, applied to the bounding, effective and permitted sets;
//! inheritable and ambient capabilities cleared.

use crate::error::{Result, SysContext};

/// Docker's default capabilities (by number, see capability.h).
pub const DEFAULT_CAPS: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// The default set as a 64-bit mask.
pub fn default_mask() -> u64 {
    DEFAULT_CAPS.iter().fold(0u64, |m, (c, _)| m | (1u64 << c))
}

/// The highest capability number the running kernel knows, asked of the kernel itself
/// (PR_CAPBSET_READ fails with EINVAL past it), so nothing inside the container's /proc can
/// change the answer.
pub fn last_cap() -> u32 {
    let mut last = 0;
    for cap in 0..64u32 {
        // SAFETY: plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            break;
        }
        last = cap;
    }
    last
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// Drops every capability outside `mask` from the bounding set, clears the ambient and
/// inheritable sets, and sets effective = permitted = `mask`.
pub fn apply(mask: u64) -> Result<()> {
    for cap in 0..=last_cap() {
        if mask & (1u64 << cap) == 0 {
            // SAFETY: plain prctl with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                return Err(nix::Error::last()).sys(|| format!("drop capability {cap}"));
            }
        }
    }
    // SAFETY: plain prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: header and two data structs as capset(2) v3 expects.
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(nix::Error::last()).sys(|| "capset".to_string());
    }
    Ok(())
}

/// Sets no_new_privs: no exec can ever gain privileges again (setuid bits, file caps).
pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: plain prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r != 0 {
        return Err(nix::Error::last()).sys(|| "prctl(PR_SET_NO_NEW_PRIVS)".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn last_cap_matches_the_kernels() {
        let proc: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(super::last_cap(), proc);
    }

    #[test]
    fn default_mask_matches_docker() {
        // docker's CapEff for root containers.
        assert_eq!(super::default_mask(), 0x00000000a80425fb);
    }
}
