//! A detached `dispatch run` hands off to a helper that shares its memory
//! (issue #38 item 5).
//!
//! Forked, the helper copied `dispatch`'s page tables, both processes took
//! copy-on-write faults on the pages they wrote next (the heap, the stack,
//! the data the loader relocated), and `dispatch` tore its copy down when
//! it exited: a tenth of a detached run's CPU. Here the helper is a
//! `clone(CLONE_VM)` on a stack of its own, as `posix_spawn(3)` makes its
//! child: one address space, made once, torn down once, by the helper.
//!
//! The price is the contract of sharing a memory with a running process:
//!
//! - the parent, from the clone on, makes system calls only, on data made
//!   before (no allocation, no `std` I/O, no thread-local): it reads one
//!   byte from a pipe and exits with it as its code (`_exit`, no exit
//!   handlers). It has no signal handler that returns (std's only ones are
//!   for faults), so its `read` cannot fail with `EINTR` and write the
//!   `errno` both share;
//! - so the helper prints what the parent printed when forked (the run id,
//!   a warning, an error line) to the caller's stdout and stderr, kept
//!   aside when it detaches, and then sends the code;
//! - the helper runs on the parent's thread pointer: its thread descriptor,
//!   `errno` and thread-locals are the parent's, which no longer uses them.
//!   Before the clone the parent unregisters the descriptor's thread id as
//!   the word the kernel clears at its exit (`set_tid_address`) and its
//!   robust-mutex list, both of which are the helper's from then on: the
//!   parent's exit then writes nothing into the memory the helper goes on
//!   using. The descriptor keeps the parent's thread id, as the owner the
//!   helper's recursive mutexes record; no other thread of the helper can
//!   have that id while the parent's process exists, and after it, only
//!   once the kernel has handed out every other id (`pid_max`, 4,194,304
//!   here) to a thread of the helper itself;
//! - a foreground run (`--detach` guessed wrongly) or a command that is not
//!   a local run is declined by the helper before it starts anything: it
//!   exits (`_exit`, nothing torn down but its stack), the parent reaps it
//!   and, alone in its memory again, goes on as before (forked, or as any
//!   command), hardened as the helper left it (not dumpable, its
//!   environment moved off the block `/proc` shows). A helper that ends any other way before its report leaves
//!   the parent with no report and memory it cannot trust: it says so and
//!   exits `125`.

use std::ffi::c_void;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::{dup2_stderr, dup2_stdout, pipe2};

use super::To;
use crate::error::EXIT_DISPATCH;

/// The helper's exit code when the command is not a local run.
pub(super) const DECLINED: i32 = 240;
/// The helper's exit code when the run is not detached: forked instead.
pub(super) const FOREGROUND: i32 = 241;

/// The helper's stack: as large as the main thread's usually is.
const STACK: usize = 8 << 20;

/// What the parent does next, when the helper declined (on a report the
/// parent exits in [`hand_off`]).
pub(super) enum Outcome {
    /// Not a local run: carry on as any command does.
    Declined,
    /// A foreground run: fork the helper instead.
    Foreground,
}

/// The helper's way back to the caller.
pub(super) struct Caller {
    /// The parent's end: the exit code, one byte.
    done: File,
    /// The caller's stdout and stderr, kept across the helper's detaching.
    kept: Option<(OwnedFd, OwnedFd)>,
}

impl Caller {
    /// Keeps the caller's stdout and stderr aside (close-on-exec: no agent
    /// inherits them) before the helper points its own at `/dev/null`.
    pub(super) fn detach(mut self) -> Caller {
        let keep = |fd: RawFd| {
            // SAFETY: 1 and 2 are open for the duration of this call.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let fd = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(3)).ok()?;
            // SAFETY: a descriptor just made, owned by nobody else.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        self.kept = keep(1).zip(keep(2));
        self
    }

    /// Prints to the caller what `say` prints, then gives the parent the
    /// code `say` returns; the helper's stdout and stderr are `/dev/null`
    /// again after. A print that panics (a closed stdout) still gives the
    /// parent a code, and the run goes on.
    pub(super) fn tell(mut self, say: impl FnOnce() -> i32) {
        let say = || {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(say));
            let _ = std::io::stdout().flush();
            code.unwrap_or(EXIT_DISPATCH)
        };
        let Some((out, err)) = self.kept.take() else {
            // Not detached yet (clap's help or usage error): the caller's
            // own descriptors are still ours.
            let code = say();
            let _ = self.done.write_all(&[code as u8]);
            return;
        };
        let _ = dup2_stdout(&out);
        let _ = dup2_stderr(&err);
        let code = say();
        super::stdio_to_null();
        drop((out, err));
        let _ = self.done.write_all(&[code as u8]);
    }
}

/// Starts the helper in this process's memory, waits for its code and
/// exits with it. Returns when the helper declined, or with `None` when it
/// could not be started (nothing was): fork it instead.
/// Must be called while this process has a single thread.
pub(super) fn hand_off() -> Option<Outcome> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC).ok()?;
    let stack = Stack::new()?;
    // SAFETY: with a null pointer the kernel clears no word at our exit,
    // and with no robust list walks none: both are in the thread descriptor
    // the helper goes on using. Nothing else reads them (no one joins the
    // main thread; no robust mutex is used).
    unsafe {
        libc::syscall(
            libc::SYS_set_tid_address,
            std::ptr::null_mut::<libc::c_int>(),
        );
        libc::syscall(
            libc::SYS_set_robust_list,
            std::ptr::null_mut::<libc::c_void>(),
            // `struct robust_list_head`: a pointer, a long and a pointer.
            3 * std::mem::size_of::<usize>(),
        );
    }
    let write = write.into_raw_fd();
    // SAFETY: `entry` runs on `stack` (never freed while the helper may
    // run: leaked below unless the helper is reaped) and takes ownership of
    // `write`; see the module's contract for what the parent does after.
    let pid = unsafe {
        libc::clone(
            entry,
            stack.top(),
            libc::CLONE_VM | libc::SIGCHLD,
            write as usize as *mut c_void,
        )
    };
    if pid == -1 {
        // SAFETY: ours; the helper does not exist.
        drop(unsafe { OwnedFd::from_raw_fd(write) });
        stack.free();
        return None;
    }
    // From here until the helper is reaped: system calls only.
    // SAFETY: our copy of the helper's end; the helper has its own. A raw
    // `close`: libc's is a cancellation point, which writes the thread
    // descriptor the helper now uses.
    unsafe { libc::syscall(libc::SYS_close, write) };
    let mut code = 0u8;
    // SAFETY: reads into a byte on this stack; `syscall` touches `errno`
    // only on an error, which a pipe's read has none of here (above).
    let n = unsafe {
        libc::syscall(
            libc::SYS_read,
            read.as_raw_fd(),
            &mut code as *mut u8,
            1usize,
        )
    };
    if n == 1 {
        // SAFETY: `_exit` is the `exit_group` system call.
        unsafe { libc::_exit(i32::from(code)) };
    }
    // The helper ended without a code: reap it, then this memory is ours.
    let mut status: libc::c_int = 0;
    // SAFETY: waits for our own child, status on this stack.
    let reaped = unsafe {
        libc::syscall(
            libc::SYS_wait4,
            pid,
            &mut status as *mut libc::c_int,
            0,
            std::ptr::null_mut::<libc::rusage>(),
        )
    };
    if reaped == i64::from(pid) && libc::WIFEXITED(status) {
        stack.free();
        match libc::WEXITSTATUS(status) {
            DECLINED => return Some(Outcome::Declined),
            FOREGROUND => return Some(Outcome::Foreground),
            _ => {}
        }
    }
    // Its memory may be in any state: say so with a system call and go.
    let line = b"error: the run's helper ended before it reported; nothing is known of the run (hint: `dispatch ps -a` shows whether it was created)\n";
    // SAFETY: writes a static buffer to stderr; exits.
    unsafe {
        libc::syscall(libc::SYS_write, 2, line.as_ptr(), line.len());
        libc::_exit(EXIT_DISPATCH);
    }
}

/// The helper's start, on its own stack.
extern "C" fn entry(arg: *mut c_void) -> libc::c_int {
    // SAFETY: the descriptor `hand_off` made and gave to this process.
    let done = unsafe { File::from_raw_fd(arg as usize as RawFd) };
    let caller = To::Caller(Caller { done, kept: None });
    let code = std::panic::catch_unwind(|| super::child(caller)).unwrap_or(EXIT_DISPATCH);
    if code == DECLINED || code == FOREGROUND {
        // The parent goes on in this memory: no exit handler may run.
        // SAFETY: the `exit_group` system call.
        unsafe { libc::_exit(code) };
    }
    std::process::exit(code)
}

/// An anonymous mapping to run the helper on, with a guard page below it.
struct Stack {
    base: *mut c_void,
}

impl Stack {
    fn new() -> Option<Stack> {
        // SAFETY: a fresh private mapping, reserved lazily.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: the lowest page of the mapping just made.
        unsafe { libc::mprotect(base, 4096, libc::PROT_NONE) };
        Some(Stack { base })
    }

    /// The stack grows down from the mapping's end (16-byte aligned).
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, which is page-aligned.
        unsafe { self.base.cast::<u8>().add(STACK).cast() }
    }

    /// Unmaps it: only once nobody runs on it.
    fn free(self) {
        // SAFETY: the mapping `new` made; its only user was reaped.
        unsafe { libc::munmap(self.base, STACK) };
    }
}
