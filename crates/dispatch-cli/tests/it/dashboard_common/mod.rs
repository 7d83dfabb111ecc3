//! A real headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`): a small client for the W3C WebDriver JSON protocol
//! that chromedriver speaks on loopback.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use dispatch_test_support::http;
use serde_json::{Value, json};

/// The key W3C WebDriver names an element reference with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

const INSTALL: &str = "apt-get install -y chromium chromium-driver";

fn found(program: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
            .map(|p| p.to_string_lossy().to_string())
    })
}

/// A headless Chromium session, or `None` (the test is skipped, saying how
/// to install them) when chromium or chromedriver is missing outside CI;
/// under `CI=true` a missing browser fails the test.
pub fn browser() -> Option<Browser> {
    browser_with(&[])
}

/// As [`browser`], with these extra Chromium arguments (e.g.
/// `--host-resolver-rules=MAP name 127.0.0.1`, a DNS answer of our own).
pub fn browser_with(args: &[&str]) -> Option<Browser> {
    let chromium = found("chromium").or_else(|| found("chromium-browser"));
    let driver = found("chromedriver");
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromium or chromedriver is missing (CI=true): install them with `{INSTALL}`");
        }
        eprintln!("skipped: chromium or chromedriver is missing; install them with `{INSTALL}`");
        return None;
    };
    Some(Browser::start(&driver, &chromium, args))
}

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    fn start(driver: &str, chromium: &str, extra: &[&str]) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http::get(&format!("{base}/status")).call()
                && r.into_string().is_ok_and(|s| s.contains("\"ready\":true"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut browser = Browser {
            driver: child,
            base,
            session: String::new(),
        };
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            "--force-prefers-reduced-motion",
        ];
        args.extend_from_slice(extra);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
            },
        }}});
        let created = browser.send("POST", "/session", Some(caps));
        browser.session = created["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser
    }

    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = http::request(method, &url).timeout(Duration::from_secs(60));
        let answer = match body {
            Some(b) => request
                .set("content-type", "application/json")
                .send_string(&b.to_string()),
            None => request.call(),
        };
        let text = match answer {
            Ok(r) => r.into_string().expect("a body"),
            Err(http::Error::Status(code, r)) => {
                panic!(
                    "webdriver {method} {path}: {code} {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => panic!("webdriver {method} {path}: {e}"),
        };
        let doc: Value = serde_json::from_str(&text).expect("webdriver answers JSON");
        doc["value"].clone()
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.send(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Polls `script` until it returns something truthy (deadline 30 s).
    pub fn wait_js(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script, json!([]));
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} (last: {v})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        match v[ELEMENT].as_str() {
            Some(id) => id.to_string(),
            None => {
                let text = self.js("return document.body.innerText", json!([]));
                panic!("no element `{css}` at {}: {v}\npage: {text}", self.url())
            }
        }
    }

    /// Clicks the element `css` selects (window.confirm answers yes).
    pub fn click(&self, css: &str) {
        self.js("window.confirm = () => true;", json!([]));
        let id = self.element(css);
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn cookies(&self) -> Value {
        self.cmd("GET", "/cookie", None)
    }

    /// Forgets every cookie of the current page's site (a logout without
    /// the server's help: the next page asks for a token again).
    pub fn clear_cookies(&self) {
        self.cmd("DELETE", "/cookie", None);
    }

    pub fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let data = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64"))
            .expect("a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot directory");
        }
        std::fs::write(path, png).expect("save the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http::delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
