//! cgroup v2 device access: a BPF_CGROUP_DEVICE program with the same allow list as the v1
//! devices cgroup: mknod of anything, read/write/mknod of null, zero,
//! full, random, urandom, tty, ptmx and the pty slaves (major 136), nothing else.

use crate::error::{IoContext, Result, SysContext};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Character devices (major, minor; `None` = any minor) the program lets containers open.
pub const ALLOWED_CHAR_DEVICES: &[(u32, Option<u32>)] = &[
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(2)),
    (136, None),
];

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_DEVCG_DEV_CHAR: i32 = 2;
const BPF_DEVCG_ACC_MKNOD: i32 = 1;

/// One eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const MOV32_X: u8 = 0xbc; // w_dst = w_src
const AND32_K: u8 = 0x54; // w_dst &= imm
const RSH32_K: u8 = 0x74; // w_dst >>= imm
const JNE_K: u8 = 0x55; // if dst != imm goto +off
const MOV64_K: u8 = 0xb7; // dst = imm
const EXIT: u8 = 0x95;

/// The program: r1 is struct bpf_cgroup_dev_ctx { access_type, major, minor }.
fn program() -> Vec<Insn> {
    let mut p = vec![
        // r2 = device type, r3 = access bits, r4 = major, r5 = minor.
        insn(LDX_W, 2, 1, 0, 0),
        insn(MOV32_X, 3, 2, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
        insn(MOV32_X, 6, 3, 0, 0),
        insn(AND32_K, 6, 0, 0, !BPF_DEVCG_ACC_MKNOD),
        insn(JNE_K, 6, 0, 2, 0), // anything but mknod: check the list
        insn(MOV64_K, 0, 0, 0, 1),
        insn(EXIT, 0, 0, 0, 0),
    ];
    let rules_len: usize = ALLOWED_CHAR_DEVICES
        .iter()
        .map(|(_, minor)| if minor.is_some() { 4 } else { 3 })
        .sum();
    p.push(insn(JNE_K, 2, 0, rules_len as i16, BPF_DEVCG_DEV_CHAR));
    for (major, minor) in ALLOWED_CHAR_DEVICES {
        match minor {
            Some(minor) => {
                p.push(insn(JNE_K, 4, 0, 3, *major as i32));
                p.push(insn(JNE_K, 5, 0, 2, *minor as i32));
            }
            None => p.push(insn(JNE_K, 4, 0, 2, *major as i32)),
        }
        p.push(insn(MOV64_K, 0, 0, 0, 1));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::result::Result<i64, nix::Error> {
    // SAFETY: bpf(2) with an attribute buffer of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if r < 0 {
        Err(nix::Error::last())
    } else {
        Ok(r)
    }
}

/// Loads the device program and attaches it to the cgroup v2 directory `dir`.
pub fn restrict_devices_v2(dir: &Path) -> Result<()> {
    let insns = program();
    let license = c"Apache-2.0";
    let mut attr = [0u64; 16];
    // union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license.
    attr[0] = BPF_PROG_TYPE_CGROUP_DEVICE as u64 | ((insns.len() as u64) << 32);
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    let prog = bpf(BPF_PROG_LOAD, &mut attr).sys(|| "load the cgroup device program".into())?;
    // SAFETY: the kernel just returned this fd.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let cg = std::fs::File::open(dir).at(dir)?;
    let mut attr = [0u64; 16];
    // BPF_PROG_ATTACH: target_fd, attach_bpf_fd, attach_type, attach_flags.
    attr[0] = cg.as_raw_fd() as u64 | ((prog.as_raw_fd() as u64) << 32);
    attr[1] = BPF_CGROUP_DEVICE as u64 | ((BPF_F_ALLOW_MULTI as u64) << 32);
    bpf(BPF_PROG_ATTACH, &mut attr)
        .sys(|| format!("attach the device program to {}", dir.display()))?;
    Ok(())
}
