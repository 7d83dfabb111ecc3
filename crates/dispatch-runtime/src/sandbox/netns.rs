//! The network namespace of a run with `NETWORK allow` lines.
//!
//! Made from a thread of its own, which `unshare(CLONE_NEWNET)` moves
//! alone into a new namespace holding only a loopback interface (down, as
//! the kernel makes it): the thread brings `lo` up, binds the egress
//! proxy's listener on `127.0.0.1:0` there, keeps a descriptor of the
//! namespace (`/proc/thread-self/ns/net`), and ends. The namespace lives
//! as long as that descriptor or the listener does.
//!
//! Each process the sandbox starts joins it (`setns`, the first step of
//! [`super::child::enter`], while it is still root): it sees `lo` alone,
//! with the proxy on it; the helper accepts the proxy's connections from
//! its own namespace, where the proxy's outgoing connections are made.
//! Nothing else leaves: with no other interface there is no route.

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sched::{CloneFlags, unshare};

/// A new network namespace and the proxy's listener inside it.
pub(crate) fn create() -> io::Result<(OwnedFd, TcpListener)> {
    let made = std::thread::Builder::new()
        .name("dispatch-netns".into())
        .spawn(|| -> io::Result<(OwnedFd, TcpListener)> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            loopback_up()?;
            let ns = File::open("/proc/thread-self/ns/net")?;
            let listener = TcpListener::bind(("127.0.0.1", 0))?;
            Ok((OwnedFd::from(ns), listener))
        })?
        .join();
    made.map_err(|_| io::Error::other("the thread making it panicked"))?
}

/// Brings the namespace's `lo` up (`SIOCSIFFLAGS`, as `ip link set lo up`).
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) takes integers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a plain C struct of integers and a union of them, all-zero valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, b) in req.ifr_name.iter_mut().zip(b"lo") {
        *slot = *b as libc::c_char;
    }
    // SAFETY: ioctl(2) reads and writes `req`, which lives on this frame.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the union's flags member.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
