//! WASM agents: `FROM dispatch/wasm[:tag]` and `COMPONENT <file>`, upstream
//! Dispatch's WebAssembly guest parcels. The parcel is a native agent (its
//! MODEL, TOOL, LIMIT and TIMEOUT lines mean the same) whose loop is a
//! WebAssembly component built against the courier ABI [`ABI`]: the host
//! answers its model and tool calls (see `dispatch-runtime`'s `wasm`).
//!
//! At build the component's file goes into the parcel (its digest covers
//! it) and must be a WebAssembly *component*, not a core module or any
//! other file: each refused with one line naming it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::agentfile::{Agentfile, AgentfileError, CopySpec};

/// The WIT package the guest imports (`host`) and exports (`guest`).
pub const ABI: &str = "dispatch:courier@0.0.1";

/// The packaged component of a `FROM dispatch/wasm` parcel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    /// Where it is under the parcel's `files/` (empty until COMPONENT).
    pub path: String,
    /// The courier ABI it targets ([`ABI`]).
    pub abi: String,
    /// The Agentfile line of `COMPONENT` (build only).
    #[serde(skip)]
    pub line: usize,
}

/// `dispatch/wasm` and `dispatch/wasm:<tag>`.
pub fn is_wasm_courier(c: &str) -> bool {
    c.split_once(':').map_or(c, |(name, _tag)| name) == "dispatch/wasm"
}

/// `COMPONENT <file>` on `line`: the file goes into the parcel where it is.
/// `src` is the file's path, normalized relative to the build context.
pub(crate) fn parse(
    component: Option<&mut Component>,
    src: String,
    line: usize,
) -> Result<CopySpec, String> {
    let Some(component) = component else {
        return Err(
            "COMPONENT is for WASM agents (hint: start the Agentfile with `FROM dispatch/wasm`)"
                .into(),
        );
    };
    if component.line != 0 {
        return Err(format!(
            "COMPONENT is given twice (first on line {})",
            component.line
        ));
    }
    if src.is_empty() {
        return Err("COMPONENT expects a file, not the build context (hint: `COMPONENT components/agent.wasm`)".into());
    }
    component.path = src.clone();
    component.abi = ABI.to_string();
    component.line = line;
    Ok(CopySpec {
        src: src.clone(),
        dest: src,
        dest_is_dir: false,
        line,
    })
}

/// What the first bytes of a file say it is: `Ok` for a WebAssembly
/// component, else why it is not one.
pub fn check_header(bytes: &[u8]) -> Result<(), String> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        let text = bytes.starts_with(b"(") || bytes.iter().take(64).all(u8::is_ascii);
        return Err(match text && !bytes.is_empty() {
            true => "is text, not a WebAssembly binary (hint: compile WAT with `wasm-tools parse`, then `wasm-tools component new`)".into(),
            false => "is not a WebAssembly binary (hint: build the guest for `wasm32-wasip2`, or wrap a core module with `wasm-tools component new`)".into(),
        });
    }
    // version (u16) then layer (u16): 1/0 is a core module, 0xd/1 a component.
    match (&bytes[4..6], &bytes[6..8]) {
        (_, [1, 0]) => Ok(()),
        (_, [0, 0]) => Err("is a core WebAssembly module, not a component (hint: wrap it with `wasm-tools component new`, or build for `wasm32-wasip2`)".into()),
        _ => Err("is a WebAssembly binary of an unknown layer, not a component".into()),
    }
}

/// At build: the COMPONENT's file in the build context `ctx` is a component.
pub(crate) fn check(af: &Agentfile, ctx: &Path) -> Result<(), AgentfileError> {
    let Some(c) = af.manifest.component.as_ref() else {
        return Ok(());
    };
    let fail = |why: String| {
        AgentfileError::new(
            c.line,
            format!("COMPONENT {}: {why}", crate::event::shorten(&c.path, 200)),
        )
    };
    let path = ctx.join(&c.path);
    let real = path.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => fail("no such file in the build context (hint: paths are relative to the directory that holds the Agentfile)".into()),
        _ => fail(format!("cannot be read: {e}")),
    })?;
    if !real.starts_with(ctx) {
        return Err(fail("is outside the build context".into()));
    }
    if !real.is_file() {
        return Err(fail("is not a file".into()));
    }
    let mut head = [0u8; 64];
    let n = std::fs::File::open(&real)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| fail(format!("cannot be read: {e}")))?;
    check_header(&head[..n]).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_components_from_modules_and_other_files() {
        assert!(check_header(b"\0asm\x0d\0\x01\0rest").is_ok());
        let module = check_header(b"\0asm\x01\0\0\0").expect_err("a module");
        assert!(module.contains("core WebAssembly module"), "{module}");
        let text = check_header(b"(component)").expect_err("text");
        assert!(text.contains("is text"), "{text}");
        let junk = check_header(&[0xff, 0xfe, 0, 1, 2, 3, 4, 5, 6]).expect_err("junk");
        assert!(junk.contains("not a WebAssembly binary"), "{junk}");
        assert!(check_header(b"").is_err());
    }

    #[test]
    fn wasm_courier_names() {
        assert!(is_wasm_courier("dispatch/wasm"));
        assert!(is_wasm_courier("dispatch/wasm:latest"));
        assert!(!is_wasm_courier("dispatch/native"));
        assert!(!is_wasm_courier("wasm"));
    }
}
