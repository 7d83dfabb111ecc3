//! Helpers for the service tests: start a service, find its listener, make
//! sure its helper never outlives the test.
#![allow(dead_code)]

use std::path::Path;

use serde_json::Value;

use crate::common::{Dispatch, alive, eventually};

/// A running service; its helper is killed when the test ends, whatever happens.
pub struct Service<'a> {
    pub d: &'a Dispatch,
    pub id: String,
    pub helper: u32,
}

impl<'a> Service<'a> {
    /// `dispatch serve <dir> --detach <args>`.
    pub fn start(d: &'a Dispatch, dir: &Path, args: &[&str]) -> Self {
        let mut all = vec!["serve", dir.to_str().expect("utf-8 path"), "--detach"];
        all.extend_from_slice(args);
        let id = d.ok(&all);
        Self::adopt(d, id)
    }

    pub fn adopt(d: &'a Dispatch, id: String) -> Self {
        let doc = d.inspect(&id);
        assert_eq!(doc["status"], "running", "the service is up: {doc:#}");
        let helper = doc["state"]["helper"]["pid"]
            .as_u64()
            .expect("a running service has a helper") as u32;
        Service { d, id, helper }
    }

    pub fn service_state(&self) -> Value {
        self.d.inspect(&self.id)["service"].clone()
    }

    pub fn bound_addr(&self) -> String {
        self.service_state()["listeners"][0]["bound_addr"]
            .as_str()
            .expect("a bound listener")
            .to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.bound_addr())
    }

    /// The heartbeat runs of this service, newest first.
    pub fn heartbeats(&self) -> Vec<Value> {
        let out = self
            .d
            .ok(&["ps", "-a", "--parent", &self.id, "--format", "json"]);
        serde_json::from_str::<Value>(&out)
            .expect("ps prints JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn stop(&self, grace_ms: u64) {
        self.d
            .ok(&["stop", &self.id, "--grace-period-ms", &grace_ms.to_string()]);
    }
}

impl Drop for Service<'_> {
    fn drop(&mut self) {
        if alive(self.helper) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.helper as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Waits until every heartbeat of `svc` has finished.
pub fn wait_heartbeats_done(svc: &Service<'_>, secs: u64) {
    eventually(secs, "every heartbeat finished", || {
        svc.heartbeats().iter().all(|r| {
            !matches!(
                r["status"].as_str(),
                Some("queued" | "starting" | "running")
            )
        })
    });
}

/// An agent that records its payload into its output.
pub const ECHO_AGENT: &str = "cat > \"$DISPATCH_OUTPUT\"\necho woke\n";
