//! Links `dispatch` as a position-independent executable (full ASLR: the
//! network-facing server must not give up randomization of its own image)
//! with packed relative relocations on Linux.
//!
//! Every `dispatch` command is a process start, and `run --detach` puts one
//! on the path to the agent. A position-independent binary carries about
//! 61,000 relative relocations that the dynamic loader applies at each
//! start. `-z pack-relative-relocs` stores them as `DT_RELR` (glibc ≥ 2.36,
//! binutils ≥ 2.38): a few kilobytes instead of ~1.4 MB of `Elf64_Rela`
//! entries for the loader to read. The pages the relocations write stay
//! the cost of ASLR; docs/benchmarks-history.md ("PIE again") measures it side by side
//! with the position-dependent build of the fifteenth session.
//!
//! The packed form is used only when the linker accepts it (probed once at
//! build time), so an older toolchain still links a plain PIE.
//!
//! A release build also puts the functions a run's start executes next to
//! each other, ahead of the rest of `.text` (`startup/startup.ld`, a linker
//! script that only inserts one output section): the kernel maps a binary's
//! code 64 KB around each page that faults, so code spread over 53 MB had
//! a detached run's processes map ~12 MB of it (and unmap it at exit), where
//! ~3 MB holds what they execute. The script names functions by their v0
//! symbols with each crate's hash left as a wildcard (`.cargo/config.toml`
//! asks for v0 names: they carry a generic function's type arguments, so
//! one instance is named without all the others), so it keeps matching as
//! the code and its dependencies change; a function it no longer names is
//! only laid out as before. `startup/order.py` regenerates it.

use std::path::Path;
use std::process::Command;

/// Set to `1` at build time, links `dispatch` position-dependent
/// (`-no-pie`), as the fifteenth session did: only to measure the price of
/// the image's ASLR beside the shipped build (BENCHMARKS.md, item 5 of
/// issue #38). Nothing ships that way; the build says so with a warning.
const NO_PIE: &str = "DISPATCH_BENCH_NO_PIE";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=startup/startup.ld");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    println!("cargo:rerun-if-env-changed={NO_PIE}");
    let relr = ["-Wl,-z,pack-relative-relocs", "-Wl,--fatal-warnings"];
    if linux && std::env::var_os(NO_PIE).is_some_and(|v| v == "1") {
        // Only to measure what ASLR of the image costs, side by side.
        println!("cargo:warning=linking dispatch -no-pie ({NO_PIE}=1): no ASLR of its image");
        println!("cargo:rustc-link-arg-bins=-no-pie");
    } else if linux && links("relr", &relr) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("startup/startup.ld");
    let order = format!("-Wl,-T,{}", script.display());
    if linux && release && links("order", &[order.as_str()]) {
        println!("cargo:rustc-link-arg-bins={order}");
    }
}

/// Whether `cc` links an empty position-independent program with `flags`
/// (`-z pack-relative-relocs`; the start's linker script, which adds to the
/// default one with `INSERT BEFORE .text`).
fn links(name: &str, flags: &[&str]) -> bool {
    let Ok(out) = std::env::var("OUT_DIR") else {
        return false;
    };
    let dir = Path::new(&out);
    let src = dir.join(format!("{name}_probe.c"));
    if std::fs::write(&src, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    Command::new("cc")
        .args(["-pie", "-fPIE"])
        .args(flags)
        .arg(&src)
        .arg("-o")
        .arg(dir.join(format!("{name}_probe")))
        .status()
        .is_ok_and(|s| s.success())
}
