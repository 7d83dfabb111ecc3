//! A native agent's LOCAL tools start from a small process, the stage
//! (`dispatch __stage`, see `dispatch_runtime::sandbox::stage`), which is
//! the tool's keeper (sandbox off) or the sandbox's outer process: the
//! failures it adds keep the run's guarantees. Its helper killed, the
//! tool's tree dies; the stage itself killed with SIGKILL during a call,
//! the tool's tree dies too, the call fails once and is never run again.
//! Stages are made by the helper's spawner (`dispatch __spawner`, see
//! `dispatch_runtime::sandbox::spawner`): killed, it takes no tool with
//! it and the next call still starts; it dies with its helper.
//! `DISPATCH_SPAWN=stage` executes a stage per call, `DISPATCH_SPAWN=fork`
//! forks tools as before.

use crate::common;
use crate::native_common;

use std::path::{Path, PathBuf};

use common::{Dispatch, alive, eventually, kill9};
use native_common::{Mock, native_agent, text};
use serde_json::json;

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A tool that counts its starts, beats, and has a background child that
/// beats (in the workspace; its output not on the call's pipes, so the
/// call can end without it).
const BEATER: &str = "echo start >> starts\n\
     (while :; do date +%s%N >> child-beats; sleep 0.02; done) </dev/null >/dev/null 2>&1 &\n\
     while :; do date +%s%N >> tool-beats; sleep 0.02; done\n";

fn beater(d: &Dispatch, name: &str) -> (Mock, PathBuf) {
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "beat", "arguments": {}, "id": "c0"}]},
        text("done", 5, 5),
    ]));
    let dir = native_agent(
        d.dir.path(),
        name,
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL LOCAL beat.sh AS beat",
            mock.url()
        ),
    );
    std::fs::write(dir.join("beat.sh"), BEATER).expect("tool");
    (mock, dir)
}

fn ppid(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The process run `id`'s helper spawned for its tool call: a child of the
/// helper in the run's group, or holding the group's stop file as its
/// descriptor 2 (a keeper, which leaves the group at once).
fn tool_process(d: &Dispatch, id: &str) -> u32 {
    let helper = d.helper_pid(id);
    let group = std::fs::read_to_string(d.root().join("runs").join(format!("{id}.cgroup")))
        .expect("the run's group is recorded");
    let mut found = None;
    eventually(10, "the tool's process is in the run's group", || {
        let procs = std::fs::read_to_string(Path::new(group.trim()).join("cgroup.procs"))
            .unwrap_or_default();
        let keeper = children_of(helper).into_iter().find(|p| {
            std::fs::read_link(format!("/proc/{p}/fd/2")).is_ok_and(|l| l.starts_with(group.trim()))
        });
        found = procs
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .find(|p| ppid(*p) == Some(helper))
            .or(keeper);
        found.is_some()
    });
    found.expect("found")
}

/// Whether `pid` is a stage: made by a spawner (whose command line it
/// keeps) or executed as `dispatch __stage`.
fn is_a_stage(pid: u32) -> bool {
    let line = cmdline(pid);
    line.contains("__spawner") || line.contains("__stage")
}

/// The processes whose parent is `pid` now.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| ppid(*p) == Some(pid))
        .collect()
}

/// The spawner of the helper `helper`, once it has one.
fn spawner_of(helper: u32) -> Option<u32> {
    children_of(helper).into_iter().find(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm"))
            .is_ok_and(|c| c.starts_with("dispatch-spawn"))
    })
}

/// An agent whose model calls its LOCAL tool `name` (the shell `script`)
/// `calls` times, one call a round, then answers.
fn calling(d: &Dispatch, name: &str, calls: usize, script: &str) -> (Mock, PathBuf) {
    let mut steps: Vec<serde_json::Value> = (0..calls)
        .map(|i| json!({"kind": "tool_calls", "calls": [{"name": name, "arguments": {}, "id": format!("c{i}")}]}))
        .collect();
    steps.push(text("done", 5, 5));
    let mock = Mock::start(serde_json::Value::Array(steps));
    let dir = native_agent(
        d.dir.path(),
        &format!("calls-{name}"),
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL LOCAL {name}.sh AS {name}",
            mock.url()
        ),
    );
    std::fs::write(dir.join(format!("{name}.sh")), script).expect("tool");
    (mock, dir)
}

fn size(f: &Path) -> u64 {
    std::fs::metadata(f).map_or(0, |m| m.len())
}

/// Kills the tool's spawned process (the stage) during the call: the
/// beats stop, the run ends, the tool started once.
fn kill_the_stage(d: Dispatch) {
    let (mock, dir) = beater(&d, "stage-kill");
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let work = d.root().join("runs").join(&id).join("work");
    let beats = [work.join("tool-beats"), work.join("child-beats")];
    eventually(30, "the tool and its child beat", || {
        beats.iter().all(|f| size(f) > 0)
    });
    let starts = std::fs::read_to_string(work.join("starts")).expect("starts");
    assert_eq!(starts.lines().count(), 1, "the tool started once");
    let stage = tool_process(&d, &id);
    assert!(
        is_a_stage(stage),
        "the tool started from a stage: {}",
        cmdline(stage)
    );
    kill9(stage as i32);
    eventually(10, "the stage is gone", || !alive(stage));
    eventually(10, "nothing of the tool's tree beats any more", || {
        let before: Vec<u64> = beats.iter().map(|f| size(f)).collect();
        std::thread::sleep(std::time::Duration::from_millis(400));
        before == beats.iter().map(|f| size(f)).collect::<Vec<_>>()
    });
    d.ok(&["wait", &id]);
    assert_eq!(
        d.status(&id),
        "succeeded",
        "the model answered after the failed call"
    );
    // The call failed (killed); the model answered; nothing ran again.
    assert_eq!(mock.requests().len(), 2, "one call with tools, one answer");
    assert_eq!(d.inspect(&id)["attempt"], json!(1), "one attempt");
}

#[test]
fn a_sandboxed_tools_stage_killed_takes_the_tools_tree_with_it_and_the_call_is_not_repeated() {
    if !is_root() {
        return; // the sandbox's PID namespace and the run's group need root
    }
    kill_the_stage(Dispatch::sandboxed());
}

#[test]
fn an_unsandboxed_tools_keeper_stage_killed_ends_the_tools_tree_and_the_call_is_not_repeated() {
    if !is_root() {
        return; // the run's group needs root here
    }
    kill_the_stage(Dispatch::new());
}

/// Sandbox off, the tool's keeper is the stage; its helper killed, the
/// keeper kills the tool's whole group, and the helper's spawner (if it
/// has one) dies too. `from` is the stage's command line's argument
/// (`__spawner` or `__stage`); `None`: the tool's parent is a fork of the
/// helper (`DISPATCH_SPAWN=fork`).
fn helper_killed(d: Dispatch, from: Option<&str>) {
    let (_mock, dir) = beater(&d, "stage-helper");
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let work = d.root().join("runs").join(&id).join("work");
    let beats = [work.join("tool-beats"), work.join("child-beats")];
    eventually(30, "the tool and its child beat", || {
        beats.iter().all(|f| size(f) > 0)
    });
    let spawned = tool_process(&d, &id);
    let line = cmdline(spawned);
    match from {
        Some(arg) => assert!(line.contains(arg), "started by {arg}: {line}"),
        None => assert!(!is_a_stage(spawned), "forked: {line}"),
    }
    let helper = d.helper_pid(&id);
    let spawner = spawner_of(helper);
    assert_eq!(
        spawner.is_some(),
        from == Some("__spawner"),
        "a spawner exactly when the stage came from one"
    );
    common::kill_helper_and_assert_beats_stop(&d, &id, &beats);
    if let Some(spawner) = spawner {
        eventually(10, "the spawner died with its helper", || !alive(spawner));
    }
}

#[test]
fn a_helper_killed_during_an_unsandboxed_tool_call_from_a_stage_takes_the_tree_with_it() {
    if !is_root() {
        return;
    }
    helper_killed(Dispatch::new(), Some("__spawner"));
}

#[test]
fn with_dispatch_spawn_stage_a_stage_is_executed_per_call_and_dies_with_its_helper() {
    if !is_root() {
        return;
    }
    helper_killed(
        Dispatch::with_env(&[("DISPATCH_SPAWN", "stage")]),
        Some("__stage"),
    );
}

/// The spawner killed with SIGKILL while a tool it made runs: the tool
/// runs on (its parent is the helper, not the spawner) and finishes; the
/// next call starts (from an executed stage, then a new spawner); the
/// run succeeds with each call made once.
#[test]
fn a_spawner_killed_during_a_call_takes_no_tool_with_it_and_the_next_call_starts() {
    if !is_root() {
        return; // the run's group needs root
    }
    for d in [Dispatch::new(), Dispatch::sandboxed()] {
        spawner_lost_during_a_call(d, libc::SIGKILL);
    }
}

/// The spawner frozen (SIGSTOP) during a call: the next call waits for its
/// answer at most 10 s, then the helper kills it and executes that call's
/// stage; the run succeeds with each call made once.
#[test]
fn a_frozen_spawner_is_given_up_and_the_next_call_starts() {
    if !is_root() {
        return; // the run's group needs root
    }
    spawner_lost_during_a_call(Dispatch::new(), libc::SIGSTOP);
}

/// A run of three tool calls whose helper's spawner gets `signal` while the
/// first call runs.
fn spawner_lost_during_a_call(d: Dispatch, signal: libc::c_int) {
    // The first call waits for `go`; the others return at once.
    let (mock, dir) = calling(
        &d,
        "step",
        3,
        "echo start >> starts\n\
         if [ \"$(wc -l < starts)\" -eq 1 ]; then while [ ! -e go ]; do sleep 0.02; done; fi\n\
         echo \"stepped $(wc -l < starts)\"\n",
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let work = d.root().join("runs").join(&id).join("work");
    eventually(30, "the first call started", || {
        work.join("starts").exists()
    });
    let helper = d.helper_pid(&id);
    let spawner = spawner_of(helper).expect("the helper has a spawner");
    // SAFETY: kill(2) of the process just found.
    unsafe { libc::kill(spawner as i32, signal) };
    std::fs::write(work.join("go"), "").expect("go");
    d.ok(&["wait", &id]);
    eventually(10, "the spawner was given up (killed and reaped)", || {
        !alive(spawner)
    });
    assert_eq!(d.status(&id), "succeeded", "{}", d.inspect(&id));
    // Each call says how many starts it saw: the workspace goes with
    // the run.
    let requests = mock.requests();
    assert_eq!(requests.len(), 4, "three tool rounds and the answer");
    let first = requests[1].body.to_string();
    assert!(
        first.contains("stepped 1"),
        "the first call finished after its spawner died: {first}"
    );
    let last = requests[3].body.to_string();
    assert!(
        last.contains("stepped 3") && !last.contains("stepped 4"),
        "each call started once: {last}"
    );
}

#[test]
fn with_dispatch_spawn_fork_tools_are_forked_and_still_die_with_their_helper() {
    if !is_root() {
        return;
    }
    helper_killed(Dispatch::with_env(&[("DISPATCH_SPAWN", "fork")]), None);
}

#[test]
fn a_tool_whose_interpreter_is_missing_fails_to_start_as_before() {
    for env in [vec![], vec![("DISPATCH_SPAWN", "fork")]] {
        let d = Dispatch::with_env(&env);
        let mock = Mock::start(json!([
            {"kind": "tool_calls", "calls": [{"name": "nope", "arguments": {}, "id": "c0"}]},
            text("done", 5, 5),
        ]));
        let dir = native_agent(
            d.dir.path(),
            "nope",
            &format!(
                "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL LOCAL nope.py AS nope USING no-such-interpreter-here",
                mock.url()
            ),
        );
        std::fs::write(dir.join("nope.py"), "print('x')\n").expect("tool");
        d.ok(&["run", dir.to_str().expect("utf-8"), "--job", "{}"]);
        let second = &mock.requests()[1];
        let body = second.body.to_string();
        assert!(
            body.contains("cannot start") && body.contains("No such file or directory"),
            "{env:?}: the model is told the tool cannot start: {body}"
        );
    }
}

/// Makes `clone3(2)` fail with ENOSYS in the calling process and what it
/// starts, as a container runtime's default seccomp profile does.
#[cfg(target_arch = "x86_64")]
fn refuse_clone3() -> std::io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut filter = [
        stmt(load, 4), // seccomp_data.arch
        jump(AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(load, 0), // seccomp_data.nr
        jump(libc::SYS_clone3 as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl(2) reads the filter program on this frame.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Where `clone3` is refused (a seccomp filter, a kernel before 5.3), the
/// spawner cannot make stages: the tool calls start from executed stages
/// and the run succeeds.
#[cfg(target_arch = "x86_64")]
#[test]
fn where_clone3_is_refused_tools_start_from_executed_stages() {
    use std::os::unix::process::CommandExt;
    if !is_root() {
        return; // installing the filter without no_new_privs needs root
    }
    let d = Dispatch::new();
    // The tool's parent is its keeper: the stage.
    let (mock, dir) = calling(
        &d,
        "who",
        2,
        "echo \"parent: $(tr '\\0' ' ' < /proc/$PPID/cmdline)\"\n",
    );
    let mut cmd = d.command();
    cmd.args(["run", dir.to_str().expect("utf-8"), "--job", "{}"]);
    // SAFETY: the hook only calls prctl(2) between fork and exec.
    unsafe { cmd.pre_exec(refuse_clone3) };
    let out = cmd.output().expect("run dispatch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = mock.requests();
    assert_eq!(requests.len(), 3, "two tool rounds and the answer");
    for (i, r) in requests[1..].iter().enumerate() {
        let body = r.body.to_string();
        assert!(
            body.contains("parent: dispatch __stage") && !body.contains("__spawner"),
            "call {i} started from an executed stage: {body}"
        );
    }
}

/// Whether `a` and `b` share one memory (`kcmp(2)`, `KCMP_VM`).
pub(crate) fn same_memory(a: u32, b: u32) -> bool {
    const KCMP_VM: libc::c_long = 1;
    // SAFETY: kcmp(2) takes plain integers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            a as libc::c_long,
            b as libc::c_long,
            KCMP_VM,
            0,
            0,
        )
    };
    assert!(
        rc >= 0,
        "kcmp({a}, {b}): {} (the kernel needs CONFIG_KCMP)",
        std::io::Error::last_os_error()
    );
    rc == 0
}

/// The sandbox's outer processes of a tool (the stage, `C0`, and PID 1 of
/// its namespace, `C1`) are one memory, no copy of it (`shared_vm`); the
/// tool's own process (`C2`, executed) and the stage's spawner have their
/// own.
#[test]
fn a_sandboxed_tools_namespace_init_shares_its_stages_memory() {
    if !is_root() {
        return; // the sandbox's PID namespace needs root
    }
    let d = Dispatch::sandboxed();
    let (_mock, dir) = beater(&d, "stage-memory");
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let work = d.root().join("runs").join(&id).join("work");
    eventually(30, "the tool beats", || size(&work.join("tool-beats")) > 0);
    let stage = tool_process(&d, &id);
    assert!(is_a_stage(stage), "from a stage: {}", cmdline(stage));
    let init = children_of(stage);
    assert_eq!(
        init.len(),
        1,
        "the stage's one child is its namespace's init"
    );
    let tool = children_of(init[0]);
    assert_eq!(tool.len(), 1, "init's one child is the tool: {tool:?}");
    assert!(
        same_memory(stage, init[0]),
        "init shares the stage's memory"
    );
    assert!(
        !same_memory(stage, tool[0]),
        "the executed tool has its own: {}",
        cmdline(tool[0])
    );
    let helper = d.helper_pid(&id);
    let spawner = spawner_of(helper).expect("a spawner");
    assert!(
        !same_memory(stage, spawner),
        "the stage is its spawner's copy"
    );
    d.ok(&["stop", &id]);
}

/// The helper's descriptors on a memfd named `dispatch-lease` (a tether's
/// deadline, see `dispatch_runtime::sandbox::tether`).
fn tethers_held(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|target| target.to_string_lossy().contains("dispatch-lease"))
                .count()
        })
        .unwrap_or(0)
}

/// A run waiting on its model after its tool call holds no tether: the
/// tether (a pipe and a memfd) is made when a tool starts and let go when
/// it ends. Three descriptors an idle run were half of what a worker with
/// thousands of native runs had open, and its file limit held its claims
/// back (issue #38).
#[test]
fn a_run_waiting_on_its_model_after_a_tool_call_holds_no_tether() {
    if !is_root() {
        return; // the tether comes with the sandbox's PID namespace
    }
    let d = Dispatch::sandboxed();
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "beat", "arguments": {}, "id": "c0"}]},
        {"kind": "stall", "text_before": "thinking"},
    ]));
    let dir = native_agent(
        d.dir.path(),
        "waits",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL LOCAL beat.sh AS beat",
            mock.url()
        ),
    );
    // The tool beats until the test lets it end (a file in its workspace).
    std::fs::write(
        dir.join("beat.sh"),
        "while [ ! -e go ]; do date +%s%N >> tool-beats; sleep 0.02; done\necho ok\n",
    )
    .expect("tool");
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let work = d.root().join("runs").join(&id).join("work");
    eventually(30, "the tool beats", || size(&work.join("tool-beats")) > 0);
    let helper = d.inspect(&id)["state"]["helper"]["pid"]
        .as_u64()
        .expect("a helper") as u32;
    assert_eq!(tethers_held(helper), 1, "a running tool is tethered");
    std::fs::write(work.join("go"), "").expect("go");
    eventually(30, "the model is asked again, and stalls", || {
        mock.requests().len() == 2
    });
    assert_eq!(
        tethers_held(helper),
        0,
        "the run waits on its model without a tether"
    );
    d.ok(&["stop", &id]);
    assert_eq!(d.status(&id), "cancelled");
}
