//! Links `dispatch` as a position-dependent executable on Linux.
//!
//! Every `dispatch` command is a process start, and `run --detach` puts one
//! on the path to the agent. As a position-independent executable the
//! binary carries about 61,000 relative relocations that the dynamic loader
//! applies at each start, writing to about 1 MB of `.data.rel.ro`: some 280
//! extra page faults, 0.6–0.9 ms on these machines (536 faults and 2.4 ms
//! for `dispatch --version`, against 255 and 1.5 ms linked this way; see
//! BENCHMARKS.md, "Isolation"). The cost is address-space randomization of
//! the executable's own image (shared libraries, heap and stack stay
//! randomized), as Go's binaries have done by default.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if linux {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
