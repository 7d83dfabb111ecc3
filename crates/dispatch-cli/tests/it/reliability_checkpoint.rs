//! Promise 4: the last checkpoint of an attempt is handed to the next one.

use crate::common;

use common::Dispatch;

#[test]
fn a_retry_resumes_from_the_last_checkpoint_and_does_not_redo_steps() {
    let d = Dispatch::new();
    let done = d.dir.path().join("done.txt");
    let agent = d.agent(
        "resumer",
        &format!(
            "i=1\n\
             if [ -n \"$DISPATCH_CHECKPOINT\" ]; then\n\
               i=$(sed 's/.*\"next\":\\([0-9]*\\).*/\\1/' \"$DISPATCH_CHECKPOINT\")\n\
             fi\n\
             while [ $i -le 4 ]; do\n\
               echo \"step $i attempt $DISPATCH_ATTEMPT\" >> {done}\n\
               echo \"{{\\\"type\\\":\\\"checkpoint\\\",\\\"step\\\":\\\"s$i\\\",\\\"state\\\":{{\\\"next\\\":$((i+1))}}}}\" >> \"$DISPATCH_EVENTS\"\n\
               if [ $i -eq 2 ] && [ \"$DISPATCH_ATTEMPT\" = 1 ]; then exit 1; fi\n\
               i=$((i+1))\n\
             done\n",
            done = done.display()
        ),
    );
    let id = d.ok(&[
        "run",
        agent.to_str().expect("utf-8"),
        "--detach",
        "--retries",
        "1",
        "--backoff",
        "10ms..10ms",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let steps = std::fs::read_to_string(&done).expect("steps ran");
    assert_eq!(
        steps, "step 1 attempt 1\nstep 2 attempt 1\nstep 3 attempt 2\nstep 4 attempt 2\n",
        "attempt 2 starts at step 3"
    );
    let log = d.ok(&["logs", &id]);
    assert!(log.contains("resuming from checkpoint \"s2\""), "{log}");
}
