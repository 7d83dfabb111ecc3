//! One interface over the two cgroup versions: which one this machine has
//! ([`version`]: v2 when `/sys/fs/cgroup` is the unified hierarchy, else v1
//! — a hybrid machine, with v1 controllers and an empty `unified` mount,
//! is v1), and an attempt's groups in it.

use std::path::PathBuf;
use std::sync::OnceLock;

use dispatch_core::isolation::Resources;

use super::{How, cgroup_v1, cgroup_v2};

/// The cgroup version limits are applied with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub(crate) fn how(self) -> How {
        match self {
            Version::V1 => How::CgroupV1,
            Version::V2 => How::CgroupV2,
        }
    }
}

/// This machine's cgroup version (looked at once per process).
pub fn version() -> Version {
    static V: OnceLock<Version> = OnceLock::new();
    *V.get_or_init(|| match cgroup_v2::unified() {
        true => Version::V2,
        false => Version::V1,
    })
}

/// Whether a group with `controller` could be created here.
pub(crate) fn can_create(controller: &str) -> bool {
    match version() {
        Version::V1 => cgroup_v1::can_create(controller),
        Version::V2 => cgroup_v2::can_create(controller),
    }
}

/// Kills and removes the groups a killed helper left for `run`.
pub(crate) fn remove_leftovers(run: &str) {
    match version() {
        Version::V1 => cgroup_v1::remove_leftovers(run),
        Version::V2 => cgroup_v2::remove_leftovers(run),
    }
}

/// An attempt's groups, in either version.
pub(crate) enum Groups {
    V1(cgroup_v1::Groups),
    V2(cgroup_v2::Groups),
}

macro_rules! each {
    ($self:ident, $g:ident => $e:expr) => {
        match $self {
            Groups::V1($g) => $e,
            Groups::V2($g) => $e,
        }
    };
}

impl Groups {
    pub(crate) fn create(name: &str, r: &Resources) -> Option<Groups> {
        match version() {
            Version::V1 => cgroup_v1::Groups::create(name, r).map(Groups::V1),
            Version::V2 => cgroup_v2::Groups::create(name, r).map(Groups::V2),
        }
    }
    pub(crate) fn version(&self) -> Version {
        match self {
            Groups::V1(_) => Version::V1,
            Groups::V2(_) => Version::V2,
        }
    }
    pub(crate) fn has_memory_limit(&self, r: &Resources) -> bool {
        each!(self, g => g.has_memory_limit(r))
    }
    pub(crate) fn has_pids(&self) -> bool {
        each!(self, g => g.has_pids())
    }
    pub(crate) fn has_cpu(&self) -> bool {
        each!(self, g => g.has_cpu())
    }
    pub(crate) fn procs_fds(&self) -> Vec<i32> {
        each!(self, g => g.procs_fds())
    }
    pub(crate) fn peak_memory(&self) -> Option<u64> {
        each!(self, g => g.peak_memory())
    }
    pub(crate) fn cpu_ns(&self) -> Option<u64> {
        each!(self, g => g.cpu_ns())
    }
    pub(crate) fn oom(&self) -> bool {
        each!(self, g => g.oom())
    }
    pub(crate) fn pids_refused(&self) -> bool {
        each!(self, g => g.pids_refused())
    }
    pub(crate) fn pids_events(&self) -> Option<PathBuf> {
        each!(self, g => g.pids_events())
    }
    pub(crate) fn tasks(&self) -> Vec<i32> {
        each!(self, g => g.tasks())
    }
    pub(crate) fn remove(&mut self) {
        each!(self, g => g.remove())
    }
}
