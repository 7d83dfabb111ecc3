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

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if linux && linker_packs_relocs() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether `cc` links an empty program with `-z pack-relative-relocs`.
fn linker_packs_relocs() -> bool {
    let Ok(out) = std::env::var("OUT_DIR") else {
        return false;
    };
    let dir = std::path::Path::new(&out);
    let src = dir.join("relr_probe.c");
    if std::fs::write(&src, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    Command::new("cc")
        .arg("-pie")
        .arg("-fPIE")
        .arg("-Wl,-z,pack-relative-relocs")
        .arg("-Wl,--fatal-warnings")
        .arg(&src)
        .arg("-o")
        .arg(dir.join("relr_probe"))
        .status()
        .is_ok_and(|s| s.success())
}
