//! Where things live under `.dispatch/`.

use std::path::{Path, PathBuf};

use dispatch_core::RunId;

/// The environment variable that names the state directory.
pub const ROOT_ENV: &str = "DISPATCH_ROOT";

/// Paths under one `.dispatch/` directory.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    /// `$DISPATCH_ROOT` if set; else the nearest `.dispatch/` in this directory
    /// or an ancestor (like git); else `./.dispatch` (created on first write).
    pub fn discover() -> Self {
        if let Some(root) = std::env::var_os(ROOT_ENV).filter(|v| !v.is_empty()) {
            return Layout::new(PathBuf::from(root));
        }
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        for dir in cwd.ancestors() {
            let candidate = dir.join(".dispatch");
            if candidate.join("dispatch.db").is_file() {
                return Layout::new(candidate);
            }
        }
        Layout::new(cwd.join(".dispatch"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn db(&self) -> PathBuf {
        self.root.join("dispatch.db")
    }

    pub fn parcels(&self) -> PathBuf {
        self.root.join("parcels")
    }

    pub fn briefs(&self) -> PathBuf {
        self.root.join("briefs")
    }

    pub fn brief(&self, sha256: &str) -> PathBuf {
        self.briefs().join(format!("{sha256}.json"))
    }

    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    /// `log-archives/`: this machine's checked copies of log archives read
    /// from the object store (`<sha256>`), and the files being archived.
    pub fn log_archives(&self) -> PathBuf {
        self.root.join("log-archives")
    }

    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// `runs/<id>.log`: stdout, stderr and lifecycle lines.
    pub fn log(&self, id: &RunId) -> PathBuf {
        self.runs().join(format!("{id}.log"))
    }

    /// `runs/<id>.final.json`: the terminal snapshot.
    pub fn final_snapshot(&self, id: &RunId) -> PathBuf {
        self.runs().join(format!("{id}.final.json"))
    }

    /// `runs/<id>/`: payload, events, output, artifacts and approvals of one run.
    pub fn run_dir(&self, id: &RunId) -> PathBuf {
        self.runs().join(id.as_str())
    }

    /// `state/<parcel-name>/`: persistent data of a parcel.
    pub fn state_dir(&self, parcel_name: &str) -> PathBuf {
        self.root.join("state").join(parcel_name)
    }

    /// `state-sync/<parcel-name>.json`: what of the parcel's state this
    /// machine synchronized with the shared artifact store.
    pub fn state_record(&self, parcel_name: &str) -> PathBuf {
        self.root
            .join("state-sync")
            .join(format!("{parcel_name}.json"))
    }
}
