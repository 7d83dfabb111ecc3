//! The sandbox of a Dispatch that is not root.
//!
//! With unprivileged user namespaces (most distributions' default), the
//! agent gets the same view as under root, built in a user namespace that
//! maps only the caller's own uid and gid; it keeps that uid and gives up
//! the capabilities the namespace gave it. Where user namespaces are off
//! (`user.max_user_namespaces=0`, Debian's `unprivileged_userns_clone=0`,
//! Ubuntu's AppArmor restriction) or `DISPATCH_SANDBOX_USERNS=off`, Landlock
//! confines its files instead: the system directories and its parcel and
//! brief read-only, its run directory and state writable, nothing else
//! (`.dispatch/`'s database, parcels and other runs, the user's home, `/tmp`)
//! readable; and, on kernels with Landlock ABI 6, no signal to a process
//! outside its domain and no abstract socket of one.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::OnceLock;

use landlock::{
    ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, path_beneath_rules,
};

use super::{RunPaths, SYSTEM_DIRS};

/// Whether this process can make a user namespace and mount in it: tried
/// once, in a forked child (a multi-threaded process cannot `unshare` a
/// user namespace itself).
pub(super) fn userns_works() -> Result<(), String> {
    static WORKS: OnceLock<Result<(), String>> = OnceLock::new();
    WORKS.get_or_init(probe_userns).clone()
}

fn probe_userns() -> Result<(), String> {
    use nix::sched::{CloneFlags, unshare};
    use nix::sys::wait::{WaitStatus, waitpid};
    // SAFETY: the child makes only system calls on static data and exits
    // with `_exit`; nothing of the parent's state is used.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("cannot fork to try a user namespace: {e}")),
        Ok(nix::unistd::ForkResult::Child) => {
            let flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS;
            let code = match unshare(flags) {
                Err(e) => e as i32,
                Ok(()) => {
                    let private = nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE;
                    match nix::mount::mount(
                        None::<&std::ffi::CStr>,
                        c"/",
                        None::<&std::ffi::CStr>,
                        private,
                        None::<&std::ffi::CStr>,
                    ) {
                        Ok(()) => 0,
                        Err(e) => e as i32,
                    }
                }
            };
            // SAFETY: _exit(2) runs no user code.
            unsafe { libc::_exit(code.clamp(0, 255)) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => break Ok(()),
                Ok(WaitStatus::Exited(_, code)) => {
                    break Err(format!(
                        "no unprivileged user namespace ({})",
                        nix::Error::from_raw(code).desc()
                    ));
                }
                Err(nix::Error::EINTR) => continue,
                Ok(_) | Err(_) => break Err("no unprivileged user namespace".into()),
            }
        },
    }
}

/// The Landlock ABI the kernel offers (0: none).
fn landlock_abi() -> i64 {
    // SAFETY: landlock_create_ruleset(2) with a null attribute, size 0 and
    // LANDLOCK_CREATE_RULESET_VERSION only answers the ABI version.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    }
}

/// The Landlock ruleset confining a run's processes to `paths`, and the
/// protections it gives (or why there is none).
pub(super) fn landlock(paths: &RunPaths<'_>) -> Result<(OwnedFd, Vec<String>), String> {
    let kernel = landlock_abi();
    if kernel <= 0 {
        return Err("Landlock: not in this kernel, or not enabled".into());
    }
    // V6: every file right up to ioctl on devices, and the scopes.
    let abi = ABI::V6;
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let fail = |e: landlock::RulesetError| format!("Landlock: {e}");
    let mut readable: Vec<&Path> = SYSTEM_DIRS.iter().map(Path::new).collect();
    readable.extend([Path::new("/proc"), paths.parcel, paths.brief]);
    let mut writable: Vec<&Path> = vec![paths.run_dir, Path::new("/dev")];
    writable.extend(paths.shared.iter().copied());
    let mut ruleset = Ruleset::default().handle_access(all).map_err(fail)?;
    let mut protections = vec!["landlock files".to_string()];
    if kernel >= 6 {
        ruleset = ruleset.scope(Scope::from_all(abi)).map_err(fail)?;
        protections.push("landlock signals".into());
    }
    let created = ruleset
        .create()
        .map_err(fail)?
        .add_rules(path_beneath_rules(&readable, read))
        .map_err(fail)?
        .add_rules(path_beneath_rules(&writable, all))
        .map_err(fail)?;
    let fd: Option<OwnedFd> = created.into();
    let fd = fd.ok_or("Landlock: not in this kernel, or not enabled")?;
    Ok((fd, protections))
}
