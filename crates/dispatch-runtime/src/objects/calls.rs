//! Model-call records in a cluster: a native run's calls are recorded
//! where it runs (`runs/<id>/calls.jsonl`, keys redacted; see
//! [`crate::call_records`]; what the dashboard shows as a call's
//! conversation). A worker with a shared artifact store uploads them when
//! the attempt ends, all of a run's in one object, `calls/<run id>/pack.json`
//! (a JSON object from each record's digest to its text: one write per run,
//! not one per record; issue #38), and a server that has none of a run's
//! records downloads the pack the first time a page shows one of them.
//! Records uploaded one by one (`calls/<run id>/<sha256>.json`, by workers
//! before the pack) are still read.

use std::collections::BTreeMap;
use std::path::Path as FsPath;

use dispatch_core::RunId;
use futures_util::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};

use super::{Objects, ObjectsError, ObjectsResult};
use crate::call_records;

/// The largest call record moved either way.
const MAX_BYTES: u64 = 4 << 20;
/// The largest pack read back.
const MAX_PACK_BYTES: u64 = 64 << 20;

impl Objects {
    fn call_key(&self, run: &RunId, sha256: &str) -> object_store::path::Path {
        let file = format!("{sha256}.json");
        self.key(["calls", run.as_str(), file.as_str()])
    }

    fn pack_key(&self, run: &RunId) -> object_store::path::Path {
        self.key(["calls", run.as_str(), "pack.json"])
    }

    /// Uploads the call records of the run whose directory is `run_dir`,
    /// all in one object that replaces the run's pack. Returns how many it
    /// holds.
    pub async fn put_calls(&self, run: &RunId, run_dir: &FsPath) -> ObjectsResult<usize> {
        let mut pack = call_records::all(run_dir);
        pack.retain(|_, text| text.len() as u64 <= MAX_BYTES);
        // No larger than a reader takes back: the smallest records first.
        let mut sizes: Vec<(usize, String)> =
            pack.iter().map(|(sha, t)| (t.len(), sha.clone())).collect();
        sizes.sort();
        let mut total = 0u64;
        for (len, sha) in sizes {
            total += len as u64 + 70;
            if total > MAX_PACK_BYTES {
                pack.remove(&sha);
            }
        }
        if pack.is_empty() {
            return Ok(0);
        }
        let key = self.pack_key(run);
        let bytes = serde_json::to_vec(&pack).expect("a map of strings is JSON");
        self.store
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(self.failed("cannot write", &key))?;
        Ok(pack.len())
    }

    /// The bytes at `key`, `None` when the store does not have them or
    /// they are over `max`.
    async fn get_small(
        &self,
        key: &object_store::path::Path,
        max: u64,
    ) -> ObjectsResult<Option<Vec<u8>>> {
        let got = match self.store.get(key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed("cannot read", key)(e)),
        };
        if got.meta.size > max {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(self.failed("cannot read", key))?);
        }
        Ok(Some(bytes))
    }

    /// Call record `sha256` of `run` onto this machine (the run's directory
    /// `run_dir`), unless it is here already; the run's other records come
    /// with it. `Ok(false)` when the store does not have it.
    pub async fn fetch_call(
        &self,
        run: &RunId,
        sha256: &str,
        run_dir: &FsPath,
    ) -> ObjectsResult<bool> {
        if !call_records::is_sha(sha256) {
            return Ok(false);
        }
        if call_records::read(run_dir, sha256).is_some() {
            return Ok(true);
        }
        let io = |source| ObjectsError::Io {
            path: call_records::path(run_dir).display().to_string(),
            source,
        };
        let key = self.pack_key(run);
        if let Some(bytes) = self.get_small(&key, MAX_PACK_BYTES).await? {
            let pack: BTreeMap<String, String> =
                serde_json::from_slice(&bytes).map_err(|e| ObjectsError::Io {
                    path: format!("{key} in {}", self.url),
                    source: std::io::Error::other(format!("not a pack of call records: {e}")),
                })?;
            call_records::add_missing(run_dir, &pack).map_err(io)?;
            if pack.contains_key(sha256) {
                return Ok(true);
            }
        }
        // A record uploaded on its own, by a worker before the pack.
        let key = self.call_key(run, sha256);
        let Some(bytes) = self.get_small(&key, MAX_BYTES).await? else {
            return Ok(false);
        };
        // Not here (asked above): appended as it is.
        call_records::append(run_dir, sha256, &String::from_utf8_lossy(&bytes)).map_err(io)?;
        Ok(true)
    }

    /// Removes `run`'s call records from the store.
    pub async fn delete_calls(&self, run: &RunId) -> ObjectsResult<()> {
        let prefix = self.key(["calls", run.as_str()]);
        let keys: Vec<_> = self
            .store
            .list(Some(&prefix))
            .filter_map(|meta| async move { meta.ok().map(|m| m.location) })
            .collect()
            .await;
        for key in keys {
            self.delete(&key).await?;
        }
        Ok(())
    }
}
