//! What a process started for a run (an agent, a LOCAL tool, an MCP
//! server) may not do even as root: write into files it does not own.
//!
//! Parcels are sealed read-only and, when built as root, owned by another
//! user (`nobody`, 65534): the modes then bind a root agent too once it has
//! lost the powers that override them. Dropped from the capability bounding
//! set just before `exec` (so the new program never gets them):
//! `CAP_CHOWN`, `CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH` (so the
//! `nobody`-owned 0700 directory of workspace templates, `parcels/.lower`,
//! cannot be entered), `CAP_FOWNER`, `CAP_SETGID`, `CAP_SETUID` (it could
//! become the parcel's owner) and `CAP_LINUX_IMMUTABLE`. Reading what the
//! modes let anyone read stays allowed. For a process that is not
//! root there is nothing to drop.

/// The capabilities dropped (see the module docs).
const DROPPED: [libc::c_ulong; 7] = [0, 1, 2, 3, 6, 7, 9];

/// Drops the powers above for the program this process is about to `exec`.
/// Best effort: a process that may not change its bounding set (no
/// `CAP_SETPCAP`) keeps what it has. Async-signal-safe (for `pre_exec`).
pub fn drop_write_powers() {
    // SAFETY: geteuid and prctl are plain system calls with no memory arguments.
    unsafe {
        if libc::geteuid() != 0 {
            return;
        }
        for cap in DROPPED {
            let _ = libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
    }
}
