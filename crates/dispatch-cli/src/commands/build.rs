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
    println!("{}", p.digest);
    Ok(0)
}
