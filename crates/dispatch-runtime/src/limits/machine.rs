//! What this machine has: its cores and memory. A run asking for more than
//! the machine has could never run as declared, and is refused at once.

use dispatch_core::isolation::Resources;
use dispatch_core::units::format_size;

/// The cores this process may use, looked up once per process (the
/// standard library reads the cgroup's CPU quota files for it: four file
/// reads a run on a server's submission path, when asked per run).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Total memory, from `/proc/meminfo` (`None` when it cannot be read),
/// read once per process.
pub fn memory_bytes() -> Option<u64> {
    static MEMORY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *MEMORY.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// Refuses `RESOURCES` that exceed this machine: the one line to show.
pub fn check_fits(r: &Resources) -> Result<(), String> {
    if let Some(cpus) = r.cpus
        && cpus > cores() as f64
    {
        let cores = cores();
        return Err(format!(
            "RESOURCES CPUS {cpus} exceeds this machine's {cores} cores (hint: ask for at most CPUS {cores})"
        ));
    }
    // `/proc/meminfo` only when MEMORY is declared (a run's path: most
    // declare none).
    if let Some(want) = r.memory_bytes
        && let Some(total) = memory_bytes()
        && want > total
    {
        return Err(format!(
            "RESOURCES MEMORY {} exceeds this machine's {} of memory (hint: ask for less MEMORY)",
            format_size(want),
            human(total)
        ));
    }
    Ok(())
}

/// A size rounded down to a whole unit, for people.
fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{}G", b >> 30),
        b => format!("{}M", b >> 20),
    }
}
