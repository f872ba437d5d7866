//! A thin WebDriver client for the browser tests: Debian's headless Chromium driven by its
//! chromedriver, both inside a TestDaemon's network namespace.
//!
//! The test process stays in the machine's namespace, so it reaches chromedriver through a
//! unix socket (filesystem sockets cross namespaces): `socat` in the daemon's namespace
//! bridges `<dir>/webdriver.sock` to chromedriver's TCP port there. Chromedriver and its
//! browser run in a process group of their own, which [`Browser::quit`] (and `Drop`) end by
//! its id; Chromium's profile lives under the test's directory, so the teardown's process
//! check would see a browser left behind.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use super::*;

/// chromedriver's port inside the daemon's namespace (the namespace is the test's own).
const DRIVER_PORT: u16 = 9515;
/// How long one WebDriver command may take (a page load, the browser's start).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A bridge from a unix socket in the test's directory to `tcp` inside a namespace.
pub struct Bridge {
    child: Child,
}

impl Bridge {
    /// `socat` in `netns` that accepts on unix socket `unix` and connects to `tcp`
    /// (`HOST:PORT`) there; or the reverse with `to_unix` (a TCP port in the namespace that
    /// reaches a unix socket).
    pub fn start(netns: &str, listen: &str, connect: &str) -> Bridge {
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["socat", listen, connect])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start socat (apt-get install socat): {e}"));
        Bridge { child }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser session.
pub struct Browser {
    driver: Option<Child>,
    bridge: Option<Bridge>,
    socket: PathBuf,
    session: String,
}

/// A WebDriver element reference.
#[derive(Debug, Clone)]
pub struct Element(String);

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver and a headless Chromium inside `d`'s network namespace.
    pub fn start(d: &TestDaemon) -> Browser {
        for tool in [
            "/usr/bin/chromium",
            "/usr/bin/chromedriver",
            "/usr/bin/socat",
        ] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: run scripts/install-deps (chromium, chromium-driver, socat)"
            );
        }
        let netns = d.netns().to_owned();
        let log = std::fs::File::create(d.dir.join("chromedriver.log")).expect("driver log");
        let driver = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args([
                "/usr/bin/chromedriver",
                &format!("--port={DRIVER_PORT}"),
                "--allowed-ips=127.0.0.1",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("driver log"))
            .stderr(log)
            // Its own process group: the browser it starts is ended with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver: {e}"));
        let socket = d.dir.join("webdriver.sock");
        let bridge = Bridge::start(
            &netns,
            &format!("UNIX-LISTEN:{},fork", socket.display()),
            &format!("TCP:127.0.0.1:{DRIVER_PORT}"),
        );
        let mut b = Browser {
            driver: Some(driver),
            bridge: Some(bridge),
            socket,
            session: String::new(),
        };
        let mut last = String::new();
        let up = poll_until(Duration::from_secs(20), || {
            match b.try_call("GET", "/status", None) {
                Ok(_) => true,
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        assert!(up, "chromedriver did not answer within 20 s: {last}");
        let profile = d.dir.join("chromium");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run", "--window-size=1400,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let answer = b.call("POST", "/session", Some(&caps));
        b.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session in {answer}"))
            .to_owned();
        b
    }

    fn try_call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut s = UnixStream::connect(&self.socket).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(COMMAND_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{DRIVER_PORT}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
        s.write_all(&body).map_err(|e| e.to_string())?;
        let raw = read_answer(&mut s)?;
        let r = parse_http(&raw)?;
        let v = r.json();
        if r.status != 200 {
            return Err(format!("{method} {path}: HTTP {}: {v}", r.status));
        }
        Ok(v["value"].clone())
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its result.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<Element> {
        self.try_find(css).ok()
    }

    fn try_find(&self, css: &str) -> Result<Element, String> {
        let body = json!({ "using": "css selector", "value": css });
        let path = format!("/session/{}/element", self.session);
        let v = self.try_call("POST", &path, Some(&body))?;
        v[ELEMENT_KEY]
            .as_str()
            .map(|s| Element(s.to_owned()))
            .ok_or_else(|| format!("no element in {v}"))
    }

    /// Waits for an element matching `css`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let mut found = None;
        let ok = poll_until(timeout, || {
            found = self.find(css);
            found.is_some()
        });
        match found {
            Some(e) if ok => e,
            _ => panic!(
                "no element `{css}` within {timeout:?}; the page says: {}\n{}",
                self.page_text(),
                self.console()
            ),
        }
    }

    /// Waits until the text of the element matching `css` contains `want`.
    pub fn wait_text(&self, css: &str, want: &str, timeout: Duration) {
        let mut last = Err(String::new());
        let ok = poll_until(timeout, || {
            last = self.try_text(css);
            last.as_ref().is_ok_and(|t| t.contains(want))
        });
        assert!(
            ok,
            "`{css}` did not show {want:?} within {timeout:?} (it shows {last:?}); the page \
             says: {}\n{}",
            self.page_text(),
            self.console()
        );
    }

    /// Waits until nothing matches `css`.
    pub fn wait_gone(&self, css: &str, timeout: Duration) {
        let ok = poll_until(timeout, || self.find(css).is_none());
        assert!(
            ok,
            "`{css}` is still there after {timeout:?}; the page says: {}",
            self.page_text()
        );
    }

    /// Clicks `el`.
    pub fn click(&self, el: &Element) {
        self.session_call(
            "POST",
            &format!("/element/{}/click", el.0),
            Some(&json!({})),
        );
    }

    /// Clicks the element matching `css` once it is there.
    /// The page re-renders what live events change: an element found may be replaced before
    /// the click lands (a stale reference), and is then found again.
    pub fn click_on(&self, css: &str) {
        let mut last = String::new();
        let clicked = poll_until(Duration::from_secs(15), || {
            let Ok(el) = self.try_find(css) else {
                last = format!("no element `{css}`");
                return false;
            };
            let path = format!("/session/{}/element/{}/click", self.session, el.0);
            match self.try_call("POST", &path, Some(&json!({}))) {
                Ok(_) => true,
                Err(e) if e.contains("stale element") => {
                    last = e;
                    false
                }
                Err(e) => panic!("WebDriver: {e}"),
            }
        });
        assert!(
            clicked,
            "cannot click `{css}`: {last}; the page says: {}",
            self.page_text()
        );
    }

    /// Types `text` into `el` (`\n` is Enter).
    pub fn type_into(&self, el: &Element, text: &str) {
        let text = text.replace('\n', "\u{E007}");
        self.session_call(
            "POST",
            &format!("/element/{}/value", el.0),
            Some(&json!({ "text": text })),
        );
    }

    /// Sets form field `css` to `value` (an input, a textarea or a select) as a user would
    /// leave it, firing `change`.
    pub fn set_field(&self, css: &str, value: &str) {
        self.wait_for(css, Duration::from_secs(15));
        let done = self.execute(
            "const el = document.querySelector(arguments[0]); el.value = arguments[1]; \
             el.dispatchEvent(new Event('change', {bubbles: true})); return el.value;",
            &[json!(css), json!(value)],
        );
        assert_eq!(done, json!(value), "cannot set {css} to {value:?}");
    }

    /// The rendered text of the element matching `css`.
    fn try_text(&self, css: &str) -> Result<String, String> {
        let el = self.try_find(css)?;
        let path = format!("/session/{}/element/{}/text", self.session, el.0);
        let v = self.try_call("GET", &path, None)?;
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("the text of `{css}` is {v}"))
    }

    /// The text of the element matching `css` ("" when there is none).
    pub fn text(&self, css: &str) -> String {
        self.try_text(css).unwrap_or_default()
    }

    /// The page's visible text (for failure messages).
    pub fn page_text(&self) -> String {
        let v = self.execute(
            "return location.href + '\\n' + document.body.innerText;",
            &[],
        );
        v.as_str().unwrap_or_default().to_owned()
    }

    /// What the page logged to its console (errors of its scripts included).
    pub fn console(&self) -> String {
        let path = format!("/session/{}/se/log", self.session);
        match self.try_call("POST", &path, Some(&json!({ "type": "browser" }))) {
            Ok(Value::Array(lines)) => lines
                .iter()
                .map(|l| format!("console: {}", l["message"].as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.session_call("GET", "/screenshot", None);
        let png = base64_decode(v.as_str().unwrap_or_default());
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Ends the session, the browser, chromedriver and the bridge.
    pub fn quit(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.try_call("DELETE", &path, None);
            self.session.clear();
        }
        self.bridge = None;
        if let Some(mut driver) = self.driver.take() {
            // The group holds chromedriver and every browser process it started.
            if let Ok(pgid) = i32::try_from(driver.id()) {
                let _ = rustix::process::kill_process_group(
                    rustix::process::Pid::from_raw(pgid).expect("pid"),
                    rustix::process::Signal::KILL,
                );
            }
            let _ = driver.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.end();
    }
}

/// Reads one HTTP answer: chromedriver keeps the connection open after it, `Connection:
/// close` or not, so the body is read by its length (and a `101` ends at its head).
pub fn read_answer(s: &mut UnixStream) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            // A `101` (a WebSocket's) has no body: what follows is the new protocol's.
            let switching = head.starts_with("http/1.1 101");
            if switching || len.is_some_and(|len| raw.len() >= end + 4 + len) {
                return Ok(raw);
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
}

/// Decodes standard base64 (the screenshots).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or(0));
        }
    }
    out
}
