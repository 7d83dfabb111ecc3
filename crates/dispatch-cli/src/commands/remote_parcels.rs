//! Parcels through `--host`: `dispatch build DIR --host` uploads the
//! directory (a tar stream: any files, their modes kept) to be built and
//! stored in the cluster; `dispatch images --host` lists the cluster's
//! parcels; `dispatch rmi REF --host` removes one. The output is the same
//! as locally.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dispatch_core::now_ms;
use dispatch_core::time::human_ago;

use super::images::ImagesArgs;
use super::remote::Remote;
use super::rmi::RmiArgs;
use crate::cli::{BuildArgs, Format};
use crate::error::{CliError, CliResult};
use crate::output::{print_columns, print_json};

impl Remote {
    /// Uploads the build context of `source` (a directory with an
    /// Agentfile, or an Agentfile) as a tar stream; the server's answer.
    pub(super) fn upload(&self, source: &Path) -> CliResult<dispatch_api::ParcelBuilt> {
        let tar = pack_context(source)?;
        let sent = self.send_tar("POST", "/v1/parcels", &tar);
        let _ = std::fs::remove_file(&tar);
        let answer = super::remote::answer_json(sent?)?;
        serde_json::from_value(answer).map_err(|e| {
            CliError::input(format!(
                "the server's answer to POST /v1/parcels is not what this dispatch reads: {e}"
            ))
        })
    }

    pub(super) fn build(&self, args: &BuildArgs) -> CliResult {
        let built = self.upload(&args.path)?;
        let digest = &built.digest;
        if !args.quiet {
            eprintln!(
                "built parcel {}{} ({} files) sha256:{digest} on {}",
                built.name,
                built
                    .version
                    .as_deref()
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default(),
                built.files,
                self.base(),
            );
        }
        println!("{digest}");
        Ok(0)
    }

    pub(super) fn images(&self, args: &ImagesArgs) -> CliResult {
        if args.verify {
            return Err(CliError::input(
                "--verify re-hashes this machine's parcels; the cluster's are verified whenever a server or worker fetches one (hint: drop --host)",
            ));
        }
        let answer: dispatch_api::ParcelList = self.typed("GET", "/v1/parcels", None)?;
        if args.format == Format::Json {
            print_json(&answer.parcels);
            return Ok(0);
        }
        let now = now_ms();
        let rows: Vec<Vec<String>> = answer
            .parcels
            .iter()
            .map(|p| {
                let digest = p.digest.as_str();
                vec![
                    p.name.clone(),
                    p.version.clone().unwrap_or_else(|| "-".to_string()),
                    digest.get(..12).unwrap_or(digest).to_string(),
                    human_ago(p.created_at, now),
                    p.files.to_string(),
                    format!("{}B", p.size),
                ]
            })
            .collect();
        print_columns(
            &["NAME", "VERSION", "DIGEST", "CREATED", "FILES", "SIZE"],
            &rows,
        );
        Ok(0)
    }

    pub(super) fn rmi(&self, args: &RmiArgs) -> CliResult {
        if args.prune {
            let answer: dispatch_api::ParcelsPruned =
                self.typed_body("POST", "/v1/parcels/prune", &dispatch_api::PruneParcels {})?;
            for digest in &answer.removed {
                println!("{digest}");
            }
            return Ok(0);
        }
        let mut failed = false;
        for reference in &args.parcels {
            let path = format!("/v1/parcels/{}", super::rmi::url_safe(reference)?);
            match self.typed::<dispatch_api::ParcelRemoved>("DELETE", &path, None) {
                Ok(removed) => println!("{}", removed.digest),
                Err(e) => {
                    eprintln!("error: {e}");
                    failed = true;
                }
            }
        }
        Ok(if failed {
            crate::error::EXIT_DISPATCH
        } else {
            0
        })
    }
}

/// A tar of the build context into a temporary file: every regular file
/// and directory under it (`.git` and `.dispatch` left out), modes kept;
/// `source` may also be an Agentfile (its directory is the context).
fn pack_context(source: &Path) -> CliResult<PathBuf> {
    let (dir, agentfile) = if source.is_dir() {
        (source.to_path_buf(), source.join("Agentfile"))
    } else if source.is_file() {
        let dir = source.parent().filter(|p| !p.as_os_str().is_empty());
        (
            dir.unwrap_or(Path::new(".")).to_path_buf(),
            source.to_path_buf(),
        )
    } else {
        return Err(CliError::input(format!(
            "{} does not exist (hint: give a directory holding an Agentfile)",
            source.display()
        )));
    };
    if !agentfile.is_file() {
        return Err(CliError::input(format!(
            "{} has no Agentfile (hint: give a directory holding an Agentfile)",
            dir.display()
        )));
    }
    static PACKS: AtomicU64 = AtomicU64::new(0);
    let out = std::env::temp_dir().join(format!(
        "dispatch-upload-{}-{}.tar",
        std::process::id(),
        PACKS.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_tar(&dir, &agentfile, &out);
    if result.is_err() {
        let _ = std::fs::remove_file(&out);
    }
    result.map(|()| out)
}

fn write_tar(dir: &Path, agentfile: &Path, out: &Path) -> CliResult<()> {
    let fail = |what: &Path, e: std::io::Error| {
        CliError::input(format!("cannot upload {}: {e}", what.display()))
    };
    let file = std::fs::File::create(out).map_err(|e| fail(out, e))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.follow_symlinks(true);
    tar.append_path_with_name(agentfile, "Agentfile")
        .map_err(|e| fail(agentfile, e))?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .map_err(|e| fail(&d, e))?
            .flatten()
            .collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name();
            if name == ".git" || name == ".dispatch" {
                continue;
            }
            let Ok(rel) = path.strip_prefix(dir) else {
                continue;
            };
            if rel == Path::new("Agentfile") {
                continue;
            }
            // A link to a directory is not walked into (it may loop back);
            // a link to a file is sent as the file it points to.
            let linked = entry.file_type().is_ok_and(|t| t.is_symlink());
            if path.is_dir() && !linked {
                tar.append_dir(rel, &path).map_err(|e| fail(&path, e))?;
                stack.push(path);
            } else if path.is_file() {
                tar.append_path_with_name(&path, rel)
                    .map_err(|e| fail(&path, e))?;
            }
        }
    }
    let mut inner = tar.into_inner().map_err(|e| fail(out, e))?;
    inner.flush().map_err(|e| fail(out, e))
}
