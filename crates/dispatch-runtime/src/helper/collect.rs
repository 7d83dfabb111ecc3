//! After the agent exits: collect its artifacts and its output.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use dispatch_store::Artifact;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{RuntimeResult, io};

/// Hashes every regular file under `dir` and stores it content-addressed in
/// `store_dir/<sha256>`. Symlinks are not followed.
pub(crate) fn collect_artifacts(dir: &Path, store_dir: &Path) -> RuntimeResult<Vec<Artifact>> {
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    if files.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(store_dir).map_err(io("creating", store_dir))?;
    let mut out = Vec::with_capacity(files.len());
    for (name, path) in files {
        let (sha256, size) = hash_file(&path)?;
        let dest = store_dir.join(&sha256);
        if !dest.exists() {
            let tmp = store_dir.join(format!(".{sha256}.{}.tmp", std::process::id()));
            std::fs::copy(&path, &tmp).map_err(io("copying artifact", &path))?;
            std::fs::rename(&tmp, &dest).map_err(io("storing artifact", &dest))?;
        }
        out.push(Artifact { name, sha256, size });
    }
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        let path = entry.path();
        if ft.is_dir() {
            walk(root, &path, out);
        } else if ft.is_file() {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            out.push((name, path));
        }
    }
}

fn hash_file(path: &Path) -> RuntimeResult<(String, u64)> {
    let file = File::open(path).map_err(io("reading artifact", path))?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut BufReader::new(file), &mut hasher)
        .map_err(io("reading artifact", path))?;
    Ok((hex::encode(hasher.finalize()), size))
}

/// The run's result: `$DISPATCH_OUTPUT` as JSON (or as a string when it is
/// not JSON), else the value of the last `output` event.
pub(crate) fn read_output(path: &Path, last_output_event: Option<Value>) -> Option<Value> {
    match std::fs::read(path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&bytes).trim_end().to_string())
        })),
        Err(_) => last_output_event,
    }
}

/// Rewrites the agent's file `path` with every secret value masked, when it
/// holds one: what the agent wrote into the run's directory (its output,
/// its events) stays there, so it must keep no secret either. A file that
/// is not UTF-8 is masked as text all the same (its other bytes lossily).
pub(crate) fn mask_file(path: &Path, secrets: &[String]) {
    let Ok(bytes) = std::fs::read(path) else {
        return;
    };
    let text = String::from_utf8_lossy(&bytes);
    if !dispatch_core::redact::contains(&text, secrets) {
        return;
    }
    let masked = dispatch_core::redact::mask(&text, secrets);
    let tmp = path.with_extension("masking.tmp");
    if std::fs::write(&tmp, masked.as_bytes()).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Collects the files left in the attempt's artifacts directory into the
/// content-addressed store and records them with the run (names masked).
pub(crate) async fn record_artifacts<S: dispatch_store::Store + ?Sized>(
    store: &S,
    layout: &crate::layout::Layout,
    run: &dispatch_core::RunId,
    prepared: &super::Prepared,
    log: &mut super::LifecycleLog,
) {
    match collect_artifacts(&prepared.artifacts_dir, &layout.artifacts()) {
        Ok(mut list) if !list.is_empty() => {
            for a in &mut list {
                a.name = super::agent::mask(&a.name, &prepared.spec.secrets);
            }
            // Uploaded before they are recorded: a listed artifact can be
            // downloaded from any server.
            super::shared::upload_artifacts(prepared, layout, &list, log).await;
            if let Err(e) = store.add_artifacts(run, &list).await {
                log.line(&format!("could not record artifacts: {e}"));
            }
        }
        Ok(_) => {}
        Err(e) => log.line(&format!("could not collect artifacts: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_stored_by_content() {
        let src = tempfile::tempdir().expect("tempdir");
        let store = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(src.path().join("sub")).expect("mkdir");
        std::fs::write(src.path().join("a.txt"), b"hello").expect("write");
        std::fs::write(src.path().join("sub/b.txt"), b"hello").expect("write");
        let got = collect_artifacts(src.path(), store.path()).expect("collect");
        let names: Vec<&str> = got.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "sub/b.txt"]);
        assert_eq!(got[0].sha256, got[1].sha256);
        assert_eq!(got[0].size, 5);
        assert!(store.path().join(&got[0].sha256).is_file());
    }

    #[test]
    fn a_file_with_a_secret_is_rewritten_masked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("output.json");
        std::fs::write(&p, br#"{"said":"key=sk-\"x"}"#).expect("write");
        mask_file(&p, &["sk-\"x".to_string()]);
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            r#"{"said":"key=****"}"#
        );
        mask_file(&dir.path().join("absent"), &["x".to_string()]);
    }

    #[test]
    fn output_is_json_or_text_or_the_last_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("out");
        assert_eq!(read_output(&p, Some(Value::from(1))), Some(Value::from(1)));
        std::fs::write(&p, br#"{"a":1}"#).expect("write");
        assert_eq!(read_output(&p, None), Some(serde_json::json!({"a":1})));
        std::fs::write(&p, b"plain text\n").expect("write");
        assert_eq!(read_output(&p, None), Some(Value::from("plain text")));
    }
}
