//! `dispatch artifacts <run> [<artifact>] [-o FILE]`: list a run's
//! artifacts, or copy one out (by sha256, a unique prefix of it, or its
//! name). Locally from `.dispatch/artifacts/`; with `--host` from the
//! server, which reads the cluster's artifact store whoever ran the run.
//! Every copy is checked against its sha256: a file that does not match is
//! never left at `-o FILE`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use dispatch_runtime::objects::{Objects, ObjectsError, chain as objects_chain};
use dispatch_store::{Artifact, ArtifactStore};
use sha2::{Digest, Sha256};

use super::remote::Remote;
use crate::cli::Format;
use crate::ctx::{Ctx, find_run};
use crate::error::{CliError, CliResult};
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct ArtifactsArgs {
    /// The run (id or unique prefix).
    pub run: String,
    /// One artifact to copy out: its sha256 (or a unique prefix) or its name.
    pub artifact: Option<String>,
    /// Where to write the artifact (default: stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format of the listing.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Local: the run in this `.dispatch/`.
pub async fn artifacts(ctx: &Ctx, args: &ArtifactsArgs) -> CliResult {
    let store = ctx
        .existing_store()?
        .ok_or_else(|| CliError::input(format!("no run matches `{}` (no runs yet)", args.run)))?;
    let run = find_run(&store, &ctx.layout, &args.run).await?;
    let list = store.list_artifacts(&run.id).await?;
    let Some(wanted) = &args.artifact else {
        return print_list(&list, args.format);
    };
    let artifact = pick(&list, wanted, run.id.as_str())?;
    let objects =
        Objects::local(ctx.layout.root()).map_err(|e| CliError::input(objects_chain(&e)))?;
    let fail = |e: ObjectsError| CliError::input(objects_chain(&e));
    match &args.output {
        Some(path) if path.as_os_str() != "-" => {
            objects
                .download_artifact(&artifact.sha256, path)
                .await
                .map_err(fail)?;
        }
        _ => {
            use futures_util::StreamExt;
            let (_, mut bytes) = objects.get_artifact(&artifact.sha256).await.map_err(fail)?;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = bytes.next().await {
                out.write_all(&chunk.map_err(fail)?)
                    .map_err(|e| CliError::input(format!("writing to stdout: {e}")))?;
            }
            let _ = out.flush();
        }
    }
    Ok(0)
}

/// With `--host`: through the server.
pub(super) fn remote(remote: &Remote, args: &ArtifactsArgs) -> CliResult {
    let run = remote.get_run(&args.run)?;
    let listed: dispatch_api::ArtifactList =
        remote.typed("GET", &format!("/v1/runs/{}/artifacts", run.id), None)?;
    let list: Vec<Artifact> = listed
        .artifacts
        .into_iter()
        .map(|a| Artifact {
            name: a.name,
            sha256: a.sha256,
            size: a.size,
        })
        .collect();
    let Some(wanted) = &args.artifact else {
        return print_list(&list, args.format);
    };
    let artifact = pick(&list, wanted, run.id.as_str())?;
    let path = format!("/v1/runs/{}/artifacts/{}", run.id, artifact.sha256);
    let mut body = remote.send("GET", &path, None)?.into_reader();
    match &args.output {
        Some(dest) if dest.as_os_str() != "-" => copy_to_file(&mut body, dest, artifact),
        _ => {
            let mut out = std::io::stdout().lock();
            let got = copy_hashed(&mut body, &mut out)
                .map_err(|e| CliError::input(format!("copying artifact {}: {e}", artifact.name)))?;
            let _ = out.flush();
            check(&got, artifact)
        }
    }
    .map(|()| 0)
}

fn print_list(list: &[Artifact], format: Format) -> CliResult {
    if format == Format::Json {
        print_json(list);
        return Ok(0);
    }
    let width = list.iter().map(|a| a.name.len()).max().unwrap_or(0).max(4);
    println!("{:<width$}  {:>10}  SHA256", "NAME", "SIZE");
    for a in list {
        println!(
            "{:<width$}  {:>10}  {}",
            a.name,
            dispatch_core::units::format_size(a.size),
            a.sha256
        );
    }
    Ok(0)
}

/// The artifact `wanted` names: a name, a sha256 or a unique prefix of one.
fn pick<'a>(list: &'a [Artifact], wanted: &str, run: &str) -> CliResult<&'a Artifact> {
    if let Some(a) = list.iter().find(|a| a.name == wanted) {
        return Ok(a);
    }
    let lower = wanted.to_ascii_lowercase();
    let mut matches: Vec<&Artifact> = list
        .iter()
        .filter(|a| !lower.is_empty() && a.sha256.starts_with(&lower))
        .collect();
    matches.dedup_by(|a, b| a.sha256 == b.sha256);
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(CliError::input(format!(
            "run {run} has no artifact `{wanted}` (hint: `dispatch artifacts {run}` lists them)"
        ))),
        many => Err(CliError::input(format!(
            "`{wanted}` matches {} artifacts of run {run} (hint: give more of the sha256)",
            many.len()
        ))),
    }
}

/// Copies `body` beside `dest`, checks it, and renames it into place.
fn copy_to_file(body: &mut dyn Read, dest: &Path, artifact: &Artifact) -> CliResult<()> {
    let name = dest
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = dest.with_file_name(format!(".{name}.{}.part", std::process::id()));
    let io = |e: std::io::Error| CliError::input(format!("writing {}: {e}", dest.display()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        let got = copy_hashed(body, &mut file)
            .map_err(|e| CliError::input(format!("copying artifact {}: {e}", artifact.name)))?;
        file.sync_all().map_err(io)?;
        check(&got, artifact)?;
        std::fs::rename(&tmp, dest).map_err(io)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Copies everything, returning the sha256 and size of what passed.
fn copy_hashed(from: &mut dyn Read, to: &mut dyn Write) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

fn check((sha256, size): &(String, u64), artifact: &Artifact) -> CliResult<()> {
    if *sha256 == artifact.sha256 && *size == artifact.size {
        return Ok(());
    }
    Err(CliError::input(format!(
        "artifact {} arrived damaged: {size} bytes hashing to {sha256}, not {} bytes hashing to {} (hint: download it again)",
        artifact.name, artifact.size, artifact.sha256
    )))
}
