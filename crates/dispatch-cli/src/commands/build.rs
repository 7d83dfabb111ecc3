use dispatch_core::parcel;

use crate::cli::BuildArgs;
use crate::ctx::Ctx;
use crate::error::CliResult;

pub fn build(ctx: &Ctx, args: &BuildArgs) -> CliResult {
    let p = parcel::build(&args.path, &ctx.layout.parcels())?;
    if !args.quiet {
        let m = &p.manifest;
        eprintln!(
            "built parcel {}{} ({} files) sha256:{}",
            m.name,
            m.version
                .as_deref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default(),
            m.files.len(),
            p.digest
        );
    }
    // A local CLI model: say now when this machine cannot run it (runs may
    // execute elsewhere, so the build itself stands).
    let models = p.manifest.agent.iter().flat_map(|a| a.models.iter());
    for m in models.filter(|m| m.provider.is_local_cli()) {
        let env = |k: &str| std::env::var(k).ok();
        if let Err(e) = dispatch_agent::cli::find_program(m.provider, env) {
            eprintln!("warning: {e}; runs on this machine will fail until it is");
        }
    }
    println!("{}", p.digest);
    Ok(0)
}
