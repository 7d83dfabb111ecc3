//! Model-call records in a cluster: a native run's calls are recorded in
//! `runs/<id>/calls/<sha256>.json` where it runs (keys redacted; what the
//! dashboard shows as a call's conversation). A worker with a shared
//! artifact store uploads them as `calls/<run id>/<sha256>.json` when the
//! attempt ends, and a server that has none of a run's record downloads it
//! into its own `runs/<id>/calls/` the first time a page shows it.

use std::path::Path as FsPath;

use dispatch_core::RunId;
use futures_util::StreamExt;
use object_store::ObjectStoreExt;

use super::{Objects, ObjectsError, ObjectsResult};

/// The largest call record moved either way.
const MAX_BYTES: u64 = 4 << 20;

/// Whether `name` is a record's file name: `<sha256>.json`.
fn record_sha(name: &str) -> Option<&str> {
    let sha = name.strip_suffix(".json")?;
    (sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit())).then_some(sha)
}

impl Objects {
    fn call_key(&self, run: &RunId, sha256: &str) -> object_store::path::Path {
        let file = format!("{sha256}.json");
        self.key(["calls", run.as_str(), file.as_str()])
    }

    /// Uploads the call records in `dir` (a run's `calls/`) the store does
    /// not have yet. Returns how many were uploaded.
    pub async fn put_calls(&self, run: &RunId, dir: &FsPath) -> ObjectsResult<usize> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(0);
        };
        let mut uploaded = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(sha) = name.to_str().and_then(record_sha) else {
                continue;
            };
            let size = entry.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            let key = self.call_key(run, sha);
            if size > MAX_BYTES || self.store.head(&key).await.is_ok() {
                continue;
            }
            self.put_file(&key, &entry.path()).await?;
            uploaded += 1;
        }
        Ok(uploaded)
    }

    /// Call record `sha256` of `run` into `dir` (the run's `calls/` on this
    /// machine), unless it is there already. `Ok(false)` when the store
    /// does not have it.
    pub async fn fetch_call(&self, run: &RunId, sha256: &str, dir: &FsPath) -> ObjectsResult<bool> {
        if record_sha(&format!("{sha256}.json")).is_none() {
            return Ok(false);
        }
        let path = dir.join(format!("{sha256}.json"));
        if path.is_file() {
            return Ok(true);
        }
        let key = self.call_key(run, sha256);
        let got = match self.store.get(&key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(self.failed("cannot read", &key)(e)),
        };
        if got.meta.size > MAX_BYTES {
            return Ok(false);
        }
        let mut bytes = Vec::new();
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(self.failed("cannot read", &key))?);
        }
        let io = |source| ObjectsError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(".{sha256}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn only_digest_named_json_files_are_records() {
        let sha = "a".repeat(64);
        assert_eq!(
            super::record_sha(&format!("{sha}.json")),
            Some(sha.as_str())
        );
        assert_eq!(super::record_sha("notes.json"), None);
        assert_eq!(super::record_sha(&format!("{sha}.json.tmp")), None);
        assert_eq!(super::record_sha(&format!("../{sha}.json")), None);
    }
}
