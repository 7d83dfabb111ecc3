//! Where a measurement's CPU time went, from `/proc`: this process (the
//! workers), its reaped children (the agents) and the PostgreSQL backends of
//! the measurement's database. Linux reports it in ticks of 1/100 s.

/// CPU time used so far, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// This process: user and system time of every thread.
    pub own: u64,
    /// Children this process waited for.
    pub children: u64,
    /// The PostgreSQL backends serving database `database` (their title
    /// names it; the pools' connections live as long as the measurement).
    pub postgres: u64,
}

impl Cpu {
    pub fn now(database: Option<&str>) -> Self {
        let me = fields(std::fs::read_to_string("/proc/self/stat").ok());
        let ms =
            |f: &[u64], a: usize, b: usize| (f.get(a).unwrap_or(&0) + f.get(b).unwrap_or(&0)) * 10;
        let mut postgres = 0;
        if let (Some(db), Ok(entries)) = (database, std::fs::read_dir("/proc")) {
            let named = format!(" {db} ");
            for e in entries.flatten() {
                let title = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let title = String::from_utf8_lossy(&title);
                if title.starts_with("postgres:") && title.contains(&named) {
                    let stat = std::fs::read_to_string(e.path().join("stat")).ok();
                    postgres += ms(&fields(stat), 11, 12);
                }
            }
        }
        Cpu {
            own: ms(&me, 11, 12),
            children: ms(&me, 13, 14),
            postgres,
        }
    }

    /// What was used since `before`, per run, as a table note.
    pub fn per_run(&self, before: &Cpu, runs: usize) -> String {
        let each = |a: u64, b: u64| a.saturating_sub(b) as f64 / runs.max(1) as f64;
        format!(
            "CPU per run: workers {:.2} ms, agents {:.2} ms, PostgreSQL {:.2} ms",
            each(self.own, before.own),
            each(self.children, before.children),
            each(self.postgres, before.postgres),
        )
    }
}

/// The numeric fields of a `stat` line after the command name: state is
/// index 0, utime 11, stime 12, cutime 13, cstime 14.
fn fields(stat: Option<String>) -> Vec<u64> {
    let Some(stat) = stat else { return Vec::new() };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Vec::new();
    };
    rest.split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect()
}
