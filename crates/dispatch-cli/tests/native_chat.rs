//! `dispatch chat` driven through a pseudo-terminal, as a person would:
//! each line a turn streamed back, Ctrl-C stops the current turn, Ctrl-D
//! leaves, and the session's history survives leaving and coming back.

mod common;
mod native_common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Dispatch, eventually};
use native_common::{Mock, message_texts, native_agent, text};
use serde_json::json;

struct Terminal {
    child: Child,
    master: std::fs::File,
    screen: Arc<Mutex<String>>,
}

impl Terminal {
    fn open(d: &Dispatch, args: &[&str]) -> Terminal {
        let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
        let slave: OwnedFd = pty.slave;
        let fd = slave.as_raw_fd();
        let mut cmd = d.command();
        cmd.args(args)
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::ioctl(fd, libc::TIOCSCTTY as _, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("dispatch chat starts");
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(String::new()));
        let mut reader = master.try_clone().expect("dup master");
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("screen")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Terminal {
            child,
            master,
            screen,
        }
    }

    fn type_in(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).expect("typing");
    }

    fn screen(&self) -> String {
        self.screen.lock().expect("screen").clone()
    }

    fn wait_for(&self, what: &str) {
        eventually(20, &format!("`{what}` on the terminal"), || {
            self.screen().contains(what)
        });
    }

    fn count(&self, what: &str) -> usize {
        self.screen().matches(what).count()
    }
}

#[test]
fn a_chat_streams_turns_ctrl_c_stops_one_ctrl_d_leaves_and_history_survives() {
    let d = Dispatch::new();
    let mut slow = text("too late", 1, 1);
    slow["delay_ms"] = json!(30_000);
    let mock = Mock::start(json!([
        text("Hi Ada, nice to meet you", 12, 6),
        slow,
        text("You said hello", 30, 4)
    ]));
    let dir = native_agent(
        d.dir.path(),
        "buddy",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai BASE_URL {}\nENTRYPOINT chat",
            mock.url()
        ),
    );
    let a = dir.to_str().expect("utf-8");

    let mut t = Terminal::open(&d, &["chat", a, "--session", "ada"]);
    t.wait_for("chatting with buddy in session ada");
    t.type_in("hello, I am Ada\n");
    t.wait_for("Hi Ada, nice to meet you");
    t.wait_for("succeeded");
    t.type_in("tell me something slow\n");
    eventually(20, "the slow turn reached the model", || {
        mock.requests().len() == 2
    });
    t.type_in("\x03");
    t.wait_for("cancelled");
    let before = t.count("> ");
    eventually(10, "a new prompt after the stopped turn", || {
        t.count("> ") > before || t.screen().ends_with("> ")
    });
    t.type_in("\x04");
    let status = t.child.wait().expect("chat exits");
    assert_eq!(status.code(), Some(0), "{}", t.screen());

    // Back again: the session remembers the first turn (not the stopped one).
    let mut t = Terminal::open(&d, &["chat", a, "--session", "ada"]);
    t.wait_for("chatting with buddy");
    t.type_in("what did I say?\n");
    t.wait_for("You said hello");
    t.type_in("\x04");
    assert_eq!(t.child.wait().expect("exits").code(), Some(0));
    let body = &mock.requests()[2].body;
    let texts = message_texts(body);
    assert_eq!(
        texts,
        [
            "hello, I am Ada",
            "Hi Ada, nice to meet you",
            "what did I say?"
        ],
        "{body}"
    );

    let ids = d.ok(&["ps", "-a", "-q"]);
    assert_eq!(ids.lines().count(), 3, "one run per turn");
    let last = d.inspect(ids.lines().next().expect("newest first"));
    assert_eq!(last["operation"], "chat");
    assert_eq!(
        last["conversation"]["messages"].as_array().map(Vec::len),
        Some(4)
    );
    let human = d.ok(&["inspect-run", last["id"].as_str().expect("id")]);
    assert!(
        human.contains("Conversation:") && human.contains("hello, I am Ada"),
        "{human}"
    );
    std::thread::sleep(Duration::from_millis(10));
}
