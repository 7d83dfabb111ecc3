//! `C1` and `C2` of [`super::child`] without a copy of `C0`'s memory
//! (issue #38).
//!
//! Forked, each of them copied the spawned process's page tables (a
//! stage's 1.8 MB of anonymous memory, most of it the binary's relocated
//! `.data.rel.ro`; a helper's 2.5 MB), marked its pages copy-on-write,
//! faulted on the pages it wrote and tore the copy down at exit: the two
//! forks were 7.5 % of a busy worker's samples. When the program to execute
//! is known before the steps start ([`Exec`]), `C0` makes `C1` with
//! `clone(CLONE_VM)` on a stack of its own, and `C1` makes `C2` with
//! `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn(3)` does: both run in
//! `C0`'s memory, which nobody copies, and `C2` executes the program itself
//! instead of returning to `std` (whose frames are on `C0`'s stack, which
//! `C0` is using).
//!
//! Sharing memory, the three processes do only what [`super::child`]
//! allows between fork and exec (system calls on data made before, no
//! allocation), write no memory but their own stacks and, in `C2` just
//! before it executes, `environ` (as `std` does: `execvp(3)` searches the
//! new environment's `PATH`), which no other of them reads. They also share
//! `C0`'s thread pointer, so `errno`: `C2` runs while `C1` waits (vfork),
//! and `C0` waits in `read(2)` until `C2` has executed or one of them
//! failed, so a failing call's `errno` is read before anyone else makes one
//! (a signal that interrupts `C0`'s read is one that ends the run).
//!
//! A failure's `errno` comes back to `C0` through a close-on-exec pipe;
//! `C0` reaps `C1` and returns the error to `std`, which reports it as a
//! failed spawn, as it did when `C1` and `C2` were forks returning it
//! themselves. On success the pipe reads end-of-file (`C2`'s copy closed
//! by its `execve`, `C1`'s when it starts reaping) and `C0` goes on as
//! before, watching its tether. While `C1` builds the view, `C0` does not
//! watch the tether: `C0` dies with its parent (the parent-death signal
//! the stage and the helper set), and `C1` with `C0`.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::unistd::Pid;

use super::child::{Steps, View};

/// The program `C2` executes, made before the steps start.
pub(super) struct Exec {
    program: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// What `argv` and `envp` point into (heap buffers, which do not move
    /// when the vectors do).
    _owned: Vec<CString>,
}

// SAFETY: the pointers point into the `CString`s this value owns, which
// are never written nor dropped before it.
unsafe impl Send for Exec {}
// SAFETY: as above; nothing of it is written after `new`.
unsafe impl Sync for Exec {}

impl Exec {
    /// `program` with `args` (`argv[0]` is `program`, as `std` makes it) in
    /// exactly the environment `env` (the last value of a name repeated
    /// wins, as with `Command::envs`).
    pub(super) fn new<'a>(
        program: &OsStr,
        args: impl IntoIterator<Item = &'a OsStr>,
        env: impl IntoIterator<Item = (&'a OsStr, &'a OsStr)>,
    ) -> io::Result<Exec> {
        let c = |s: &[u8]| {
            CString::new(s).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "nul byte found in provided data",
                )
            })
        };
        let mut owned = vec![c(program.as_bytes())?];
        for a in args {
            owned.push(c(a.as_bytes())?);
        }
        let argc = owned.len();
        let vars: std::collections::BTreeMap<&[u8], &[u8]> = env
            .into_iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        for (k, v) in vars {
            // As `std` makes them: `KEY=value`, whatever the name holds.
            owned.push(c(&[k, b"=", v].concat())?);
        }
        let ptrs = |s: &[CString]| -> Vec<*const libc::c_char> {
            s.iter()
                .map(|s| s.as_ptr())
                .chain([std::ptr::null()])
                .collect()
        };
        Ok(Exec {
            program: owned[0].clone(),
            argv: ptrs(&owned[..argc]),
            envp: ptrs(&owned[argc..]),
            _owned: owned,
        })
    }
}

/// What `C1` and `C2` read, on `C0`'s stack.
struct Shared<'a> {
    steps: &'a Steps,
    view: &'a View,
    exec: &'a Exec,
    /// The pipe's write end, where a failing `C1` or `C2` writes its errno.
    report: RawFd,
    /// The top of `C2`'s stack.
    stack: *mut libc::c_void,
}

/// Each of `C1` and `C2` runs on one of these (the lowest page a guard).
const STACK: usize = 256 << 10;

/// From `C0`, in its new namespaces: makes `C1` and, through it, `C2`,
/// which executes `exec`; returns only an error (see the module docs).
pub(super) fn start(steps: &Steps, view: &View, exec: &Exec) -> io::Result<()> {
    let (read, report) = super::stage::pipe()?;
    let shared = Shared {
        steps,
        view,
        exec,
        report: report.as_raw_fd(),
        stack: stack()?,
    };
    // SAFETY: `c1` runs on a stack of its own in this process's memory and
    // reads `shared`, which lives on this frame until `C1` is reaped (an
    // error) or forever (this process goes on in `mirror`, which exits).
    let c1 = unsafe {
        libc::clone(
            c1,
            stack()?,
            libc::CLONE_VM | libc::SIGCHLD,
            std::ptr::from_ref(&shared).cast_mut().cast(),
        )
    };
    let cloned = match c1 {
        c1 if c1 < 0 => Err(io::Error::last_os_error()),
        c1 => Ok(c1),
    };
    // This process's write end (C1 has its own).
    drop(report);
    let c1 = cloned?;
    let mut errno = [0u8; 4];
    let said = read_all(read.as_raw_fd(), &mut errno);
    drop(read);
    if said == errno.len() {
        let mut status = 0;
        // SAFETY: waitpid(2) of the process made above, into a local.
        while unsafe { libc::waitpid(c1, &mut status, 0) } < 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
    }
    let fds = steps.tether.as_ref().and_then(|t| t.fds());
    super::child::mirror(Pid::from_raw(c1), Some(fds))
}

/// `C1`: PID 1 of the new namespace (see [`super::child`]).
extern "C" fn c1(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `start` passed its `Shared`, alive while this process is.
    let shared = unsafe { &*arg.cast::<Shared<'_>>() };
    let failed = (|| {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .map_err(io::Error::from)?;
        super::child::build_view(shared.view)?;
        // SAFETY: `c2` runs on its own stack in this memory while this
        // process waits (CLONE_VFORK) until it executed or exited.
        let c2 = unsafe {
            libc::clone(
                c2,
                shared.stack,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                arg,
            )
        };
        if c2 < 0 {
            return Err(io::Error::last_os_error());
        }
        // Closes every descriptor (the report's too: C0 reads its end), then
        // reaps until C2 exits.
        super::child::mirror(Pid::from_raw(c2), None)
    })();
    fail(shared.report, failed)
}

/// `C2`: drops its privileges and executes the program.
extern "C" fn c2(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: as in `c1`.
    let shared = unsafe { &*arg.cast::<Shared<'_>>() };
    let failed = match super::child::drop_privileges(shared.steps) {
        Err(e) => e,
        Ok(()) => {
            let exec = shared.exec;
            // SAFETY: `environ` is read by no other process of this memory;
            // execvp(3) reads the NUL-terminated program and the
            // null-terminated arrays, which `exec` owns.
            unsafe {
                environ = exec.envp.as_ptr();
                libc::execvp(exec.program.as_ptr(), exec.argv.as_ptr());
            }
            io::Error::last_os_error()
        }
    };
    fail(shared.report, Err(failed))
}

unsafe extern "C" {
    static mut environ: *const *const libc::c_char;
}

/// Writes why this process failed to `report` and exits.
fn fail(report: RawFd, result: io::Result<()>) -> ! {
    let errno = match result {
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
        Ok(()) => libc::EIO,
    };
    // SAFETY: write(2) of four bytes on this frame, then _exit(2).
    unsafe {
        libc::write(report, errno.to_ne_bytes().as_ptr().cast(), 4);
        libc::_exit(127)
    }
}

/// A stack of [`STACK`] bytes, its lowest page inaccessible: its top.
fn stack() -> io::Result<*mut libc::c_void> {
    // SAFETY: an anonymous private mapping of no file; mprotect(2) of its
    // first page, which it owns.
    unsafe {
        let at = libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        );
        if at == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        libc::mprotect(at, 4096, libc::PROT_NONE);
        Ok(at.cast::<u8>().add(STACK).cast())
    }
}

/// Reads into `buf` until it is full or end-of-file: how many bytes came.
fn read_all(fd: RawFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: read(2) into the rest of `buf`.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => break,
        }
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(ptrs: &[*const libc::c_char]) -> Vec<String> {
        assert!(ptrs.last().is_some_and(|p| p.is_null()), "null-terminated");
        ptrs[..ptrs.len() - 1]
            .iter()
            // SAFETY: each points into a CString the Exec owns.
            .map(|p| {
                unsafe { std::ffi::CStr::from_ptr(*p) }
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    /// What `C2` executes is what `std` would: `argv[0]` the program as
    /// given, one `KEY=value` a name (the last value given wins).
    #[test]
    fn an_exec_is_the_program_its_arguments_and_exactly_its_environment() {
        let o = OsStr::new;
        let exec = Exec::new(
            o("sh"),
            [o("-c"), o("echo hi")],
            [
                (o("PATH"), o("/usr/bin")),
                (o("A"), o("1")),
                (o("A"), o("2")),
            ],
        )
        .expect("made");
        assert_eq!(exec.program.to_str(), Ok("sh"));
        assert_eq!(strings(&exec.argv), ["sh", "-c", "echo hi"]);
        assert_eq!(strings(&exec.envp), ["A=2", "PATH=/usr/bin"]);
        let nul = Exec::new(o("sh"), [o("a\0b")], []).err().expect("refused");
        assert_eq!(nul.kind(), io::ErrorKind::InvalidInput);
    }
}
