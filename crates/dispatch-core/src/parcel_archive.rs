//! Parcels as one archive, to move them between machines (see
//! [`crate::parcel::pack`] and [`crate::parcel::unpack`]).
//!
//! The archive is a tar of the parcel's `files/` directory: one regular-file
//! entry per file, in the manifest's order (sorted by path), with mode 0o644
//! or 0o755, time 0, owner 0 and no user names, so the same parcel always
//! packs to the same bytes. The manifest travels beside it, as its exact
//! canonical bytes.
//!
//! Unpacking trusts nothing it is given: the manifest must hash to the
//! digest, every path must be a plain relative path, and the archive must
//! hold exactly the manifest's files with their sizes and SHA-256s. The
//! parcel is written into a temporary directory and renamed into place, so
//! `<parcels_root>/<digest>` is complete or absent.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::parcel::{FileEntry, Manifest, Parcel, ParcelError};
use crate::parcel_build::{
    FILES, MANIFEST, SCHEMA, copy_hashing, io_err, load, make_read_only, move_into_place, norm_rel,
    remove_stale_temps, temp_name,
};

/// The canonical manifest text and the archive of `files/` of a parcel on disk.
/// Each file is checked against the manifest as it is read, so a damaged
/// parcel is never packed.
pub(crate) fn pack(parcel: &Parcel) -> Result<(String, Vec<u8>), ParcelError> {
    let mut archive = Vec::new();
    let manifest = pack_to(parcel, &mut archive)?;
    Ok((manifest, archive))
}

/// As [`pack`], with the archive written to `out` as it is made: a parcel
/// of any size packs in constant memory. A file that does not match its
/// SHA-256 in the manifest fails the pack (what was written is then not
/// an archive of the parcel: the caller throws it away).
pub(crate) fn pack_to(parcel: &Parcel, out: impl Write) -> Result<String, ParcelError> {
    let path = parcel.dir.join(MANIFEST);
    let manifest = fs::read(&path).map_err(io_err("cannot read", &path))?;
    let corrupt = |problem: String| ParcelError::Corrupt {
        digest: parcel.digest.clone(),
        problem,
    };
    if hex::encode(Sha256::digest(&manifest)) != parcel.digest {
        return Err(corrupt(format!("{MANIFEST} does not hash to the digest")));
    }
    let manifest = String::from_utf8(manifest)
        .map_err(|_| corrupt(format!("{MANIFEST} is not UTF-8 text")))?;
    let mut builder = tar::Builder::new(out);
    let files = parcel.files_dir();
    for entry in &parcel.manifest.files {
        let src = files.join(&entry.path);
        let file = fs::File::open(&src).map_err(io_err("cannot read", &src))?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(entry.size);
        header.set_mode(if entry.executable { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let mut hashing = Hashing {
            inner: file.take(entry.size),
            hasher: Sha256::new(),
            read: 0,
        };
        builder
            .append_data(&mut header, &entry.path, &mut hashing)
            .map_err(io_err("cannot archive", &src))?;
        let (sha, read) = (hex::encode(hashing.hasher.finalize()), hashing.read);
        if read != entry.size || sha != entry.sha256 {
            return Err(corrupt(format!(
                "files/{} does not match its SHA-256 in the manifest",
                entry.path
            )));
        }
    }
    builder.finish().map_err(io_err("cannot archive", &files))?;
    Ok(manifest)
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = buf.get(..n).unwrap_or_default();
        self.hasher.update(got);
        self.read += n as u64;
        Ok(n)
    }
}

/// Verifies a parcel given as manifest and archive, and writes it to
/// `<parcels_root>/<digest>` unless a complete parcel is there already.
pub(crate) fn unpack(
    digest: &str,
    manifest: &[u8],
    archive: impl Read,
    parcels_root: &Path,
) -> Result<Parcel, ParcelError> {
    let refuse = |problem: String| ParcelError::Unverified {
        digest: digest.to_string(),
        problem,
    };
    let hex_digest = digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex_digest {
        return Err(refuse("the digest is not 64 lowercase hex digits".into()));
    }
    let actual = hex::encode(Sha256::digest(manifest));
    if actual != digest {
        return Err(refuse(format!("its manifest hashes to {actual}")));
    }
    let parsed: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| refuse(format!("its manifest does not parse: {e}")))?;
    if parsed.schema != SCHEMA {
        return Err(refuse(format!(
            "unsupported manifest schema {} (this version reads schema {SCHEMA})",
            parsed.schema
        )));
    }
    let final_dir = parcels_root.join(digest);
    // One that changed on disk is written anew.
    if final_dir.join(MANIFEST).is_file()
        && let Some(parcel) = crate::parcel_seal::usable_or_removed(&final_dir)
    {
        return Ok(parcel);
    }
    fs::create_dir_all(parcels_root)
        .map_err(io_err("cannot create parcels directory", parcels_root))?;
    let tmp = parcels_root.join(temp_name());
    let written = write_verified(&tmp, &parsed, manifest, archive).map_err(|e| match e {
        Unpack::Refused(problem) => refuse(problem),
        Unpack::Parcel(e) => e,
    });
    if let Err(e) = written {
        let _ = crate::parcel_seal::remove_tree(&tmp);
        return Err(e);
    }
    move_into_place(&tmp, &final_dir)?;
    remove_stale_temps(parcels_root);
    load(&final_dir)
}

enum Unpack {
    /// The input is not the parcel it claims to be.
    Refused(String),
    /// Writing failed.
    Parcel(ParcelError),
}

impl From<ParcelError> for Unpack {
    fn from(e: ParcelError) -> Self {
        Unpack::Parcel(e)
    }
}

/// Writes the archive's files into `tmp/files/`, checking each against the
/// manifest, then the manifest itself.
fn write_verified(
    tmp: &Path,
    manifest: &Manifest,
    manifest_bytes: &[u8],
    archive: impl Read,
) -> Result<(), Unpack> {
    let mut expected: BTreeMap<&str, &FileEntry> = BTreeMap::new();
    for entry in &manifest.files {
        if norm_rel(&entry.path).as_deref() != Some(entry.path.as_str()) || entry.path.is_empty() {
            return Err(Unpack::Refused(format!(
                "its manifest names `{}`, which is not a plain relative path",
                entry.path
            )));
        }
        expected.insert(entry.path.as_str(), entry);
    }
    let files = tmp.join(FILES);
    fs::create_dir_all(&files).map_err(io_err("cannot create", &files))?;
    let unreadable = |e: io::Error| Unpack::Refused(format!("its archive is unreadable: {e}"));
    let mut reader = tar::Archive::new(archive);
    for item in reader.entries().map_err(unreadable)? {
        let mut item = item.map_err(unreadable)?;
        let name = item
            .path()
            .map_err(unreadable)?
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| Unpack::Refused("its archive holds a non-UTF-8 path".into()))?;
        if !item.header().entry_type().is_file() {
            return Err(Unpack::Refused(format!(
                "its archive holds `{name}`, which is not a regular file"
            )));
        }
        let Some(entry) = expected.remove(name.as_str()) else {
            return Err(Unpack::Refused(format!(
                "its archive holds `{name}`, which the manifest does not list (or lists once)"
            )));
        };
        let size = item.header().size().map_err(unreadable)?;
        if size != entry.size {
            return Err(Unpack::Refused(format!(
                "`{name}` is {size} bytes, the manifest says {}",
                entry.size
            )));
        }
        let dest = files.join(&entry.path);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(io_err("cannot create", &dest))?;
        let (sha, _) = copy_hashing(&mut item.by_ref().take(size), &mut out).map_err(unreadable)?;
        if sha != entry.sha256 {
            return Err(Unpack::Refused(format!(
                "`{name}` hashes to {sha}, the manifest says {}",
                entry.sha256
            )));
        }
        out.sync_all().map_err(io_err("cannot write", &dest))?;
        make_read_only(&dest, entry.executable)
            .map_err(io_err("cannot set permissions on", &dest))?;
    }
    if let Some(missing) = expected.keys().next() {
        return Err(Unpack::Refused(format!(
            "its archive lacks `{missing}`, which the manifest lists"
        )));
    }
    let path = tmp.join(MANIFEST);
    fs::write(&path, manifest_bytes).map_err(io_err("cannot write", &path))?;
    make_read_only(&path, false).map_err(io_err("cannot set permissions on", &path))?;
    crate::parcel_seal::seal(tmp, &manifest.files).map_err(io_err("cannot seal", tmp))?;
    Ok(())
}

#[cfg(test)]
#[path = "parcel_archive_tests.rs"]
mod tests;
