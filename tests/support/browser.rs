//! A headless Chromium driven over the Chrome DevTools Protocol (a WebSocket carrying
//! JSON commands), for the tests of the report page: launch, navigate, evaluate, type,
//! click, screenshot. Chromium is Debian's `chromium` package (`.ci/run` installs it);
//! `CTWA_CHROMIUM` points at another binary.
//!
//! Also the checks of the report page ([`check_page_matches`],
//! [`check_refused_key_shows_error`]), shared by the test against the JSON contract and
//! the test against the running stack.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// A failure of the browser or of a command sent to it, with what Chromium said.
#[derive(Clone, PartialEq, Eq)]
pub struct BrowserError(pub String);

impl std::fmt::Display for BrowserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for BrowserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrowserError {}

fn err(message: impl Into<String>) -> BrowserError {
    BrowserError(message.into())
}

/// How long one DevTools command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Chromium may take to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs before any script of every document: records CSP violations and uncaught errors,
/// so a test can assert there were none (listening after the load would miss them).
const WATCH_JS: &str = r#"
window.__ctwaCsp = [];
window.__ctwaErrors = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__ctwaCsp.push({ directive: e.effectiveDirective, blocked: String(e.blockedURI), sample: e.sample || "" });
});
window.addEventListener("error", function (e) {
  window.__ctwaErrors.push(String(e.message || (e.target && e.target.src) || e));
}, true);
window.addEventListener("unhandledrejection", function (e) {
  window.__ctwaErrors.push("unhandled rejection: " + String(e.reason));
});
"#;

/// Commands awaiting their answer, by id.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// One DevTools connection (to a page target): commands by id, answers matched by id,
/// events ignored.
struct Connection {
    next_id: AtomicU64,
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Connection {
    async fn open(url: &str) -> Result<Self, BrowserError> {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| err(format!("DevTools WebSocket {url}: {e}")))?;
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        let pending: Pending = Arc::default();
        let writer = tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let answers = pending.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                let Some(id) = value.get("id").and_then(Value::as_u64) else {
                    continue; // an event
                };
                let waiter = answers.lock().expect("pending").remove(&id);
                if let Some(waiter) = waiter {
                    let answer = match value.get("error") {
                        Some(e) => Err(e.to_string()),
                        None => Ok(value.get("result").cloned().unwrap_or(Value::Null)),
                    };
                    let _ = waiter.send(answer);
                }
            }
            // Closed: every command still waiting fails now rather than at its timeout.
            answers.lock().expect("pending").clear();
        });
        Ok(Self {
            next_id: AtomicU64::new(1),
            outgoing,
            pending,
            tasks: vec![writer, reader],
        })
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, BrowserError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(id, tx);
        let command = json!({"id": id, "method": method, "params": params}).to_string();
        self.outgoing
            .send(Message::Text(command.into()))
            .map_err(|_| err(format!("{method}: the DevTools connection is closed")))?;
        match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(e))) => Err(err(format!("{method}: {e}"))),
            Ok(Err(_)) => Err(err(format!("{method}: the DevTools connection closed"))),
            Err(_) => {
                self.pending.lock().expect("pending").remove(&id);
                Err(err(format!("{method}: no answer in {COMMAND_TIMEOUT:?}")))
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A headless Chromium with one page (1280x900), killed with its helper processes on drop.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    page: Connection,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

/// The browser binary: `CTWA_CHROMIUM`, else `chromium` on the PATH.
pub fn chromium_path() -> String {
    std::env::var("CTWA_CHROMIUM")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "chromium".to_string())
}

impl Browser {
    /// Starts Chromium headless on a fresh profile and opens a blank page.
    pub async fn launch() -> Result<Self, BrowserError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let binary = chromium_path();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let profile = std::env::temp_dir().join(format!(
            "ctwa-chromium-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&profile)
            .map_err(|e| err(format!("profile directory {}: {e}", profile.display())))?;
        let spawned = Command::new(&binary)
            .args([
                "--headless=new",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                &format!("--user-data-dir={}", profile.display()),
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1280,900",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--metrics-recording-only",
                "--password-store=basic",
                "--hide-scrollbars",
                "--mute-audio",
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: the drop ends the browser's helpers with it.
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&profile);
                return Err(err(if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "Chromium not found ({binary:?}): install Debian's `chromium` package (.ci/run does) or set CTWA_CHROMIUM to the browser's path"
                    )
                } else {
                    format!("starting Chromium ({binary:?}): {e}")
                }));
            }
        };

        // The DevTools address is on stderr; the rest of stderr is kept (its tail) for
        // error messages, and drained so the browser never blocks on a full pipe.
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr_tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (found_tx, found_rx) = std::sync::mpsc::channel::<String>();
        let tail = stderr_tail.clone();
        std::thread::spawn(move || {
            let mut found = Some(found_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ")
                    && let Some(tx) = found.take()
                {
                    let _ = tx.send(url.trim().to_string());
                }
                let mut tail = tail.lock().expect("tail");
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let browser_url =
            tokio::task::spawn_blocking(move || found_rx.recv_timeout(LAUNCH_TIMEOUT))
                .await
                .map_err(|e| err(format!("waiting for Chromium: {e}")));
        let browser_url = match browser_url {
            Ok(Ok(url)) => url,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&profile);
                let tail: Vec<String> = stderr_tail.lock().expect("tail").iter().cloned().collect();
                return Err(err(format!(
                    "Chromium ({binary}) printed no DevTools address ({}); its stderr:\n{}",
                    match other {
                        Err(e) => e.to_string(),
                        _ => format!("exited or silent for {LAUNCH_TIMEOUT:?}"),
                    },
                    tail.join("\n")
                )));
            }
        };
        // ws://127.0.0.1:PORT/devtools/browser/ID -> the page target's ws://127.0.0.1:PORT/devtools/page/ID
        let opened = async {
            let host = browser_url
                .strip_prefix("ws://")
                .and_then(|rest| rest.split('/').next())
                .ok_or_else(|| err(format!("unexpected DevTools address {browser_url}")))?
                .to_string();
            let browser = Connection::open(&browser_url).await?;
            let target = browser
                .call("Target.createTarget", json!({"url": "about:blank"}))
                .await?;
            let target_id = target["targetId"]
                .as_str()
                .ok_or_else(|| err(format!("Target.createTarget answered {target}")))?;
            let page = Connection::open(&format!("ws://{host}/devtools/page/{target_id}")).await?;
            page.call("Page.enable", json!({})).await?;
            page.call(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({"source": WATCH_JS}),
            )
            .await?;
            Ok::<_, BrowserError>(page)
        }
        .await;
        match opened {
            Ok(page) => Ok(Self {
                child,
                profile,
                page,
                stderr_tail,
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&profile);
                Err(e)
            }
        }
    }

    /// The last lines Chromium wrote to stderr (for a failing test's message).
    pub fn stderr_tail(&self) -> String {
        let tail = self.stderr_tail.lock().expect("tail");
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// A raw DevTools command on the page.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, BrowserError> {
        self.page.call(method, params).await
    }

    /// Opens `url` and waits until its document has loaded.
    pub async fn navigate(&self, url: &str) -> Result<(), BrowserError> {
        // A mark on the old document, so the wait below never sees it (same URL) as done.
        self.eval("window.__ctwaLeft = true").await?;
        let answer = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(text) = answer.get("errorText").and_then(Value::as_str) {
            return Err(err(format!("navigating to {url}: {text}")));
        }
        let expected = serde_json::to_string(url).expect("a string");
        self.wait_for(
            &format!(
                "!window.__ctwaLeft && document.readyState === 'complete' && location.href === {expected}"
            ),
            COMMAND_TIMEOUT,
        )
        .await
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value as JSON
    /// (`null` for `undefined`); a thrown exception is an error.
    pub async fn eval(&self, js: &str) -> Result<Value, BrowserError> {
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({
                    "expression": js,
                    "returnByValue": true,
                    "awaitPromise": true,
                    "userGesture": true,
                }),
            )
            .await?;
        if let Some(details) = answer.get("exceptionDetails") {
            let description = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("an exception");
            return Err(err(format!("evaluating `{js}`: {description}")));
        }
        Ok(answer["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Polls `js_predicate` until it is truthy, or fails after `timeout` (evaluation errors
    /// while a document is replaced count as false).
    pub async fn wait_for(
        &self,
        js_predicate: &str,
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        let deadline = Instant::now() + timeout;
        let expression = format!("!!({js_predicate})");
        let mut last_error = None;
        loop {
            match self.eval(&expression).await {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(_) => {}
                Err(e) => last_error = Some(e),
            }
            if Instant::now() >= deadline {
                return Err(err(format!(
                    "`{js_predicate}` still false after {timeout:?}{}",
                    last_error
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Focuses the element at `selector`, clears its value and types `text` into it as
    /// keyboard input would.
    pub async fn type_into(&self, selector: &str, text: &str) -> Result<(), BrowserError> {
        let sel = serde_json::to_string(selector).expect("a string");
        let focused = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return 'missing'; \
                 e.focus(); if ('value' in e) e.value = ''; \
                 return document.activeElement === e ? 'ok' : 'not focusable'; }})()"
            ))
            .await?;
        if focused != json!("ok") {
            return Err(err(format!("type_into {selector}: {focused}")));
        }
        self.call("Input.insertText", json!({"text": text})).await?;
        Ok(())
    }

    /// Sets the value of the input or select at `selector` and fires `input` and
    /// `change` (for date inputs and selects, which take no typed text).
    pub async fn set_value(&self, selector: &str, value: &str) -> Result<(), BrowserError> {
        let sel = serde_json::to_string(selector).expect("a string");
        let val = serde_json::to_string(value).expect("a string");
        let done = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return 'missing'; \
                 e.value = {val}; if (e.value !== {val}) return 'refused the value'; \
                 e.dispatchEvent(new Event('input', {{bubbles: true}})); \
                 e.dispatchEvent(new Event('change', {{bubbles: true}})); return 'ok'; }})()"
            ))
            .await?;
        if done != json!("ok") {
            return Err(err(format!("set_value {selector}: {done}")));
        }
        Ok(())
    }

    /// Clicks the middle of the element at `selector` with the mouse, as a user would: it
    /// must be visible and not covered by another element.
    pub async fn click(&self, selector: &str) -> Result<(), BrowserError> {
        let sel = serde_json::to_string(selector).expect("a string");
        let at = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return 'missing'; \
                 e.scrollIntoView({{block: 'center', inline: 'center'}}); \
                 const r = e.getBoundingClientRect(); \
                 if (r.width === 0 || r.height === 0) return 'not visible'; \
                 const x = r.left + r.width / 2, y = r.top + r.height / 2; \
                 const hit = document.elementFromPoint(x, y); \
                 if (!hit || !(hit === e || e.contains(hit))) return 'covered by ' + (hit ? hit.outerHTML.slice(0, 80) : 'nothing'); \
                 return {{x, y}}; }})()"
            ))
            .await?;
        let (Some(x), Some(y)) = (at["x"].as_f64(), at["y"].as_f64()) else {
            return Err(err(format!("click {selector}: {at}")));
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await?;
        }
        Ok(())
    }

    /// Saves a PNG of the viewport (1280x900) at `path`, creating its directories.
    pub async fn screenshot(&self, path: &Path) -> Result<(), BrowserError> {
        self.capture(path, json!({"format": "png"})).await
    }

    /// Saves a PNG of the whole page (1280 wide, as tall as the document) at `path`.
    pub async fn screenshot_full_page(&self, path: &Path) -> Result<(), BrowserError> {
        let metrics = self.call("Page.getLayoutMetrics", json!({})).await?;
        let size = &metrics["cssContentSize"];
        let (Some(width), Some(height)) = (size["width"].as_f64(), size["height"].as_f64()) else {
            return Err(err(format!("Page.getLayoutMetrics answered {metrics}")));
        };
        self.capture(
            path,
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            }),
        )
        .await
    }

    async fn capture(&self, path: &Path, params: Value) -> Result<(), BrowserError> {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", params).await?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| err("Page.captureScreenshot returned no data"))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| err(format!("screenshot data: {e}")))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        }
        std::fs::write(path, png).map_err(|e| err(format!("{}: {e}", path.display())))
    }

    /// The CSP violations the page reported since it loaded.
    pub async fn csp_violations(&self) -> Result<Vec<Value>, BrowserError> {
        Ok(array(self.eval("window.__ctwaCsp || []").await?))
    }

    /// The uncaught errors (and failed script loads) since the page loaded.
    pub async fn page_errors(&self) -> Result<Vec<Value>, BrowserError> {
        Ok(array(self.eval("window.__ctwaErrors || []").await?))
    }
}

fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SIGTERM lets Chromium end its helpers; SIGKILL to its own process group after
        // five seconds ends whatever is left.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's PID and process group.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; the group is the browser's own (process_group(0) at spawn).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

// ---- The report page's checks --------------------------------------------------------

/// What the page shows in place of `null` (nothing to divide by).
pub const NONE_SHOWN: &str = "\u{2014}";

/// The id field of a row at `level` (`campaign`, `adset`, `ad`).
pub fn row_id_field(level: &str) -> &'static str {
    match level {
        "campaign" => "campaign_id",
        "adset" => "adset_id",
        "ad" => "ad_id",
        other => panic!("unknown level {other:?}"),
    }
}

/// The text the page must show for a JSON value: strings verbatim, integers in full,
/// null as a dash.
pub fn shown(value: &Value) -> String {
    match value {
        Value::Null => NONE_SHOWN.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every value the page tagged with `data-field`, as
/// `{scope, field, row, date, currency, text}`.
const READ_FIELDS_JS: &str = r#"Array.from(document.querySelectorAll("[data-field]")).map(function (e) {
  return { scope: e.dataset.scope || "", field: e.dataset.field, row: e.dataset.row || null,
           date: e.dataset.date || null, currency: e.dataset.currency || null, text: e.textContent };
})"#;

/// The table's row ids, top to bottom.
const ROW_ORDER_JS: &str = r##"Array.from(document.querySelectorAll("#rows-body tr")).map(function (tr) { return tr.dataset.row; })"##;

/// For each chart, how many pixels of its series' colours its canvas holds:
/// `{daily: {spend, revenue}, funnel: {bars}}`.
const CHART_PIXELS_JS: &str = r#"(function () {
  function count(box, colours) {
    var out = {};
    colours.forEach(function (c) { out[c[0]] = 0; });
    box.querySelectorAll("canvas").forEach(function (canvas) {
      if (!canvas.width || !canvas.height) return;
      var px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      for (var i = 0; i < px.length; i += 4) {
        if (px[i + 3] < 128) continue;
        colours.forEach(function (c) {
          if (Math.abs(px[i] - c[1]) + Math.abs(px[i + 1] - c[2]) + Math.abs(px[i + 2] - c[3]) < 40) out[c[0]]++;
        });
      }
    });
    return out;
  }
  return {
    daily: count(document.getElementById("daily-chart"), [["spend", 194, 65, 12], ["revenue", 21, 128, 61]]),
    funnel: count(document.getElementById("funnel-chart"), [["bars", 29, 78, 216]])
  };
})()"#;

/// Opens `{base_url}/report` and waits for its script to be ready.
pub async fn open_report(browser: &Browser, base_url: &str) -> Result<(), BrowserError> {
    browser.navigate(&format!("{base_url}/report")).await?;
    browser
        .wait_for(
            "document.body && document.body.dataset.state === 'idle'",
            COMMAND_TIMEOUT,
        )
        .await
}

/// Fills the form (key typed, dates, level, optional ad account) and presses Load; waits
/// until the page shows the report or an error, and returns which (`loaded` / `error`).
pub async fn submit_form(
    browser: &Browser,
    key: &str,
    since: &str,
    until: &str,
    level: &str,
    ad_account_id: Option<&str>,
) -> Result<String, BrowserError> {
    browser.type_into("#api-key", key).await?;
    browser.set_value("#since", since).await?;
    browser.set_value("#until", until).await?;
    browser.set_value("#level", level).await?;
    browser
        .set_value("#ad-account", ad_account_id.unwrap_or(""))
        .await?;
    browser
        .eval("document.body.dataset.state = 'submitting'")
        .await?;
    browser.click("#load").await?;
    browser
        .wait_for(
            "['loaded', 'error'].includes(document.body.dataset.state)",
            COMMAND_TIMEOUT,
        )
        .await?;
    Ok(browser
        .eval("document.body.dataset.state")
        .await?
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// The visible text of `#error` if it is shown, else `None`.
pub async fn visible_error(browser: &Browser) -> Result<Option<String>, BrowserError> {
    let text = browser
        .eval(
            "(() => { const e = document.getElementById('error'); \
             if (!e || e.hidden || e.getClientRects().length === 0) return null; \
             const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 ? e.innerText : null; })()",
        )
        .await?;
    Ok(text.as_str().map(str::to_string))
}

/// With a key the server refuses (401/403): the page shows `#error` with the server's
/// `error.message`, keeps the form, shows no report, and is never blank. Returns the
/// message shown.
pub async fn check_refused_key_shows_error(
    browser: &Browser,
    base_url: &str,
    key: &str,
    server_message: &str,
) -> String {
    open_report(browser, base_url)
        .await
        .expect("the page opens");
    let state = submit_form(browser, key, "2026-11-01", "2026-11-30", "campaign", None)
        .await
        .expect("the form submits");
    assert_eq!(state, "error", "a refused key ends in the error state");
    let shown = visible_error(browser)
        .await
        .expect("read #error")
        .expect("#error is visible");
    assert!(
        shown.contains(server_message),
        "#error shows the server's message {server_message:?}: {shown:?}"
    );
    assert!(
        shown.contains("API key"),
        "#error says it is the key: {shown:?}"
    );
    let page = browser
        .eval(
            "({ report: document.getElementById('report').hidden, \
               form: document.getElementById('params').getClientRects().length > 0, \
               text: document.body.innerText.length })",
        )
        .await
        .expect("read the page");
    assert_eq!(page["report"], json!(true), "no report is shown: {page}");
    assert_eq!(page["form"], json!(true), "the form stays: {page}");
    assert!(
        page["text"].as_u64().unwrap_or(0) > 100,
        "the page is not blank: {page}"
    );
    assert_eq!(
        browser.page_errors().await.expect("errors"),
        Vec::<Value>::new()
    );
    assert_eq!(
        browser.csp_violations().await.expect("csp"),
        Vec::<Value>::new()
    );
    shown
}

/// Loads the report for `expected`'s range, level and ad account with `key`, and checks
/// the page against `expected` (the JSON of `GET /v1/reports/ads` for the same query):
/// - every value tagged `data-field` equals the JSON's, verbatim, and every value of the
///   header, the totals, each row, each day and each other currency is on the page;
/// - the table has one row per JSON row, in the JSON's order; sorting by spend is by
///   number, largest first, and a second click reverses it;
/// - both charts drew their series (pixels of the series' colours on their canvases);
/// - the key is in sessionStorage only (not localStorage, a cookie or the URL);
/// - no CSP violation and no script error.
pub async fn check_page_matches(browser: &Browser, base_url: &str, key: &str, expected: &Value) {
    let text = |v: &Value| v.as_str().expect("a string field").to_string();
    let level = text(&expected["level"]);
    let id_field = row_id_field(&level);
    open_report(browser, base_url)
        .await
        .expect("the page opens");
    let state = submit_form(
        browser,
        key,
        &text(&expected["since"]),
        &text(&expected["until"]),
        &level,
        expected["ad_account_id"].as_str(),
    )
    .await
    .expect("the form submits");
    if state != "loaded" {
        panic!(
            "the report did not load: {:?}",
            visible_error(browser).await.ok().flatten()
        );
    }

    // Values: what the page shows, keyed (scope, key, field) -> text.
    let fields = array(browser.eval(READ_FIELDS_JS).await.expect("read fields"));
    let mut page: BTreeMap<(String, String, String), String> = BTreeMap::new();
    for f in &fields {
        let scope = f["scope"].as_str().unwrap_or_default().to_string();
        let key = match scope.as_str() {
            "row" => f["row"].as_str(),
            "daily" => f["date"].as_str(),
            "other" => f["currency"].as_str(),
            _ => Some(""),
        }
        .unwrap_or_default()
        .to_string();
        let field = f["field"].as_str().unwrap_or_default().to_string();
        let previous = page.insert(
            (scope.clone(), key.clone(), field.clone()),
            f["text"].as_str().unwrap_or_default().to_string(),
        );
        assert!(
            previous.is_none(),
            "{scope}/{key}/{field} is on the page twice"
        );
    }

    // What the JSON says the page must show.
    let mut want: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let mut put = |scope: &str, key: &str, field: &str, value: String| {
        want.insert((scope.into(), key.into(), field.into()), value);
    };
    for field in [
        "ad_account_id",
        "currency",
        "timezone",
        "since",
        "until",
        "level",
        "generated_at",
    ] {
        put("report", "", field, shown(&expected[field]));
    }
    let totals = expected["totals"].as_object().expect("totals");
    for (field, value) in totals {
        put("totals", "", field, shown(value));
    }
    let rows = expected["rows"].as_array().expect("rows");
    let metric_fields: Vec<&String> = totals
        .keys()
        .filter(|f| !f.starts_with("clicks_with"))
        .collect();
    for row in rows {
        let id = text(&row[id_field]);
        for field in &metric_fields {
            put("row", &id, field, shown(&row[field.as_str()]));
        }
        let entities: &[&str] = match level.as_str() {
            "campaign" => &["campaign"],
            "adset" => &["campaign", "adset"],
            _ => &["campaign", "adset", "ad"],
        };
        for entity in entities {
            let name = &row[format!("{entity}_name")];
            let shown_name = if name.is_null() {
                text(&row[format!("{entity}_id")])
            } else {
                text(name)
            };
            put("row", &id, &format!("{entity}_name"), shown_name);
        }
        if let Some(other) = row["revenue_other_currencies"].as_object() {
            for (currency, amount) in other {
                put(
                    "row",
                    &id,
                    &format!("revenue_other_currencies.{currency}"),
                    shown(amount),
                );
            }
        }
    }
    for day in expected["daily"].as_array().expect("daily") {
        let date = text(&day["date"]);
        for (field, value) in day.as_object().expect("a day") {
            put("daily", &date, field, shown(value));
        }
    }
    for other in expected["other_currencies"]
        .as_array()
        .expect("other_currencies")
    {
        let currency = text(&other["currency"]);
        for field in ["revenue", "purchases"] {
            put("other", &currency, field, shown(&other[field]));
        }
    }
    let missing: Vec<_> = want.keys().filter(|k| !page.contains_key(*k)).collect();
    assert!(missing.is_empty(), "not on the page: {missing:?}");
    let extra: Vec<_> = page.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        extra.is_empty(),
        "on the page but not in the JSON: {extra:?}"
    );
    // When the report was made is the page's own request's: on a live stack it may be a
    // second later than the JSON it is compared with, so only its day must agree.
    let made = (
        "report".to_string(),
        String::new(),
        "generated_at".to_string(),
    );
    let day = |s: Option<&String>| s.map(|s| s.chars().take(10).collect::<String>());
    assert_eq!(
        day(page.get(&made)),
        day(want.get(&made)),
        "the page shows when the report was made"
    );
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, _)| **k != made)
        .filter(|(k, v)| page.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k:?}: page {:?}, JSON {v:?}", page[k]))
        .collect();
    assert!(
        wrong.is_empty(),
        "the page differs from the JSON:\n{}",
        wrong.join("\n")
    );
    // Money beside the account's currency code in the totals.
    let currency_shown = browser
        .eval("Array.from(document.querySelectorAll('#totals .cur')).map(e => e.textContent)")
        .await
        .expect("currencies");
    assert!(
        array(currency_shown)
            .iter()
            .all(|c| *c == expected["currency"]),
        "totals carry the account's currency"
    );

    // The table: one row per JSON row, in its order; numeric sort by spend.
    let json_order: Vec<String> = rows.iter().map(|r| text(&r[id_field])).collect();
    let order = |v: Value| -> Vec<String> {
        array(v)
            .iter()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(
        order(browser.eval(ROW_ORDER_JS).await.expect("rows")),
        json_order,
        "the table lists the JSON's rows in its order"
    );
    let spend_of: HashMap<String, f64> = rows
        .iter()
        .map(|r| {
            (
                text(&r[id_field]),
                text(&r["spend"]).parse::<f64>().expect("a decimal"),
            )
        })
        .collect();
    let mut by_spend_desc = json_order.clone();
    by_spend_desc.sort_by(|a, b| spend_of[b].total_cmp(&spend_of[a]));
    browser
        .click("#rows thead button[data-sort='spend']")
        .await
        .expect("sort by spend");
    let first = order(browser.eval(ROW_ORDER_JS).await.expect("rows"));
    assert_eq!(
        first, by_spend_desc,
        "first click: spend, largest first, by number"
    );
    assert_eq!(
        browser
            .eval(
                "document.querySelector(\"#rows th[data-key='spend']\").getAttribute('aria-sort')"
            )
            .await
            .expect("aria-sort"),
        json!("descending")
    );
    browser
        .click("#rows thead button[data-sort='spend']")
        .await
        .expect("sort by spend again");
    let second = order(browser.eval(ROW_ORDER_JS).await.expect("rows"));
    let mut reversed = first.clone();
    reversed.reverse();
    assert_eq!(second, reversed, "a second click reverses the order");
    // Sorting moves rows, never changes a value.
    let after = array(browser.eval(READ_FIELDS_JS).await.expect("read fields"));
    assert_eq!(after.len(), fields.len(), "sorting keeps every value");

    // The charts drew their series.
    browser
        .wait_for(
            "document.querySelectorAll('#daily-chart canvas, #funnel-chart canvas').length >= 2",
            COMMAND_TIMEOUT,
        )
        .await
        .expect("both charts have a canvas");
    let pixels = browser.eval(CHART_PIXELS_JS).await.expect("chart pixels");
    for (chart, series) in [("daily", "spend"), ("daily", "revenue"), ("funnel", "bars")] {
        let n = pixels[chart][series].as_u64().unwrap_or(0);
        assert!(
            n > 20,
            "the {chart} chart drew its {series} ({n} pixels): {pixels}"
        );
    }

    // The key: this tab's sessionStorage only.
    let storage = browser
        .eval(
            "({ session: Object.keys(sessionStorage).map(k => sessionStorage.getItem(k)), \
               local: localStorage.length, cookie: document.cookie, url: location.href })",
        )
        .await
        .expect("storage");
    assert_eq!(
        storage["session"],
        json!([key]),
        "the key is in sessionStorage"
    );
    assert_eq!(storage["local"], json!(0), "nothing in localStorage");
    assert_eq!(storage["cookie"], json!(""), "no cookie");
    assert!(
        !storage["url"].as_str().unwrap_or_default().contains(key),
        "not in the URL"
    );

    let violations = browser.csp_violations().await.expect("csp");
    assert!(violations.is_empty(), "CSP violations: {violations:?}");
    let errors = browser.page_errors().await.expect("errors");
    assert!(errors.is_empty(), "script errors: {errors:?}");
    let ids: BTreeSet<&String> = json_order.iter().collect();
    assert_eq!(ids.len(), json_order.len(), "row ids are unique");
}
