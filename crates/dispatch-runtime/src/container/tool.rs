//! `TOOL_SANDBOX image <ref>`: the flags a native agent's LOCAL tools run
//! in a container with — `--rm -i`, the parcel and the workspace read-only
//! at their own paths, `NETWORK`, a read-only root, the containers'
//! ulimits, an owner label for the orphan sweep, never a pull.

use std::path::Path;

use dispatch_agent::tools::Sandbox;
use dispatch_core::isolation::{Network, configures_container_client};
use dispatch_core::parcel::Manifest;

use super::{ContainerError, Runtime};

/// The sandbox of `image` for a run of `manifest`, once the image is known
/// to be present.
pub async fn sandbox(
    image: &str,
    manifest: &Manifest,
    parcel_dir: &Path,
    work_dir: &Path,
) -> Result<Sandbox, String> {
    let runtime = Runtime::detect().map_err(|e| e.to_string())?;
    let present = runtime
        .command()
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", runtime.path.display()))?;
    if !present.status.success() {
        return Err(format!(
            "image {image} is not present (hint: {} build/pull/load it on this machine; Dispatch never pulls)",
            runtime.name()
        ));
    }
    let network = manifest.network.unwrap_or(Network::None);
    let mut args: Vec<String> = ["--rm", "-i", "--init", "--pull=never", "--read-only"]
        .map(String::from)
        .to_vec();
    args.extend(runtime.stdio_args());
    args.extend(["--tmpfs".into(), "/tmp".into()]);
    args.extend(["--network".into(), network.as_str().into()]);
    for u in super::plan::ulimits().map_err(|e: ContainerError| e.to_string())? {
        args.extend(["--ulimit".into(), u]);
    }
    for l in super::owner_labels() {
        args.extend(["--label".into(), l]);
    }
    for dir in [parcel_dir, work_dir] {
        let d = dir.to_string_lossy();
        if d.contains(':') {
            return Err(ContainerError::UnmountablePath(dir.to_path_buf()).to_string());
        }
        args.extend(["-v".into(), format!("{d}:{d}:ro")]);
    }
    args.extend(["-w".into(), work_dir.to_string_lossy().into_owned()]);
    Ok(Sandbox {
        remove: runtime
            .force_remove_args()
            .into_iter()
            .map(String::from)
            .collect(),
        runtime: runtime.path,
        client_env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| configures_container_client(k))
            .collect(),
        args,
        image: image.to_string(),
    })
}
