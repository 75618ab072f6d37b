//! Network namespace setup: bring the loopback interface up.

use crate::error::{Result, SysContext};

/// Sets IFF_UP on `lo` in the current network namespace.
pub fn loopback_up() -> Result<()> {
    // SAFETY: socket/ioctl on a zeroed ifreq with a NUL-terminated name; fd closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(nix::Error::last()).sys(|| "socket for loopback setup".into());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &mut req);
        }
        let err = nix::Error::last();
        libc::close(fd);
        if r != 0 {
            return Err(err).sys(|| "bring loopback interface up".into());
        }
    }
    Ok(())
}
