//! Parcel archives too big to keep in the cluster's database row: under
//! `parcels/<digest>.tar` in the cluster's object store. They are not named
//! by their own hash: whoever unpacks one checks every file against the
//! parcel's manifest, which hashes to the digest (see
//! [`dispatch_core::parcel::unpack`]).

use std::path::Path as FsPath;

use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tokio::io::AsyncWriteExt;

use super::{Objects, ObjectsError, ObjectsResult};

impl Objects {
    fn parcel_key(&self, digest: &str) -> Path {
        self.key(["parcels", &format!("{digest}.tar")])
    }

    /// Stores the archive file at `path` as parcel `digest`'s.
    pub async fn put_parcel_archive(&self, digest: &str, path: &FsPath) -> ObjectsResult<()> {
        self.put_file(&self.parcel_key(digest), path)
            .await
            .map(drop)
    }

    /// Parcel `digest`'s archive into the file `dest` (streamed; the caller
    /// verifies what it unpacks). `NotFound` when the store lacks it.
    pub async fn download_parcel_archive(&self, digest: &str, dest: &FsPath) -> ObjectsResult<u64> {
        let key = self.parcel_key(digest);
        let got = self
            .store
            .get(&key)
            .await
            .map_err(self.failed("cannot read", &key))?;
        let io = |source| ObjectsError::Io {
            path: dest.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut stream = got.into_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.failed("cannot read", &key))?;
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(size)
    }

    /// Removes parcel `digest`'s archive (nothing when there is none).
    pub async fn delete_parcel_archive(&self, digest: &str) -> ObjectsResult<()> {
        self.delete(&self.parcel_key(digest)).await
    }
}
