//! Headless Chromium for the browser tests: Debian's `chromium`, driven by
//! its command line (`--dump-dom`, `--screenshot`), one at a time.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use super::{BROWSER_UA, wait_bounded};

/// How long one Chromium run may take before it is killed.
pub const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

// ---- Chromium ----

/// One Chromium at a time: they are heavy, and parallel runs make virtual
/// time budgets flaky on small machines.
static CHROMIUM: Mutex<()> = Mutex::new(());

/// The Chromium executable, or a failure that says how to install it.
pub fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("LUOT_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "Chromium is missing, and the browser tests need it. Run `bash tests/run.sh` \
         (as root it installs Debian's `chromium`), or `apt-get install chromium`, or \
         point LUOT_CHROMIUM at a Chromium binary."
    );
}

/// How to launch one Chromium.
pub struct Launch<'a> {
    pub url: &'a str,
    /// `None` keeps headless Chromium's own (bot) User-Agent.
    pub user_agent: Option<&'a str>,
    /// Turns on the browser's "Do Not Track" setting.
    pub do_not_track: bool,
    /// Virtual milliseconds the page may run (timers fire instantly;
    /// network requests are waited for).
    pub budget_ms: u32,
    /// The browser's UI language (`--lang`), or its default.
    pub lang: Option<&'a str>,
}

impl<'a> Launch<'a> {
    pub fn new(url: &'a str) -> Self {
        Launch {
            url,
            user_agent: Some(BROWSER_UA),
            do_not_track: false,
            budget_ms: 5_000,
            lang: Some("vi"),
        }
    }

    pub fn run(&self, action: &[String]) -> Output {
        let exe = chromium();
        let profile = TempDir::new().expect("a Chromium profile directory");
        if self.do_not_track {
            let default = profile.path().join("Default");
            std::fs::create_dir_all(&default).unwrap();
            std::fs::write(
                default.join("Preferences"),
                json!({"enable_do_not_track": true}).to_string(),
            )
            .unwrap();
        }
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push(format!("--virtual-time-budget={}", self.budget_ms));
        if let Some(lang) = self.lang {
            args.push(format!("--lang={lang}"));
        }
        if let Some(ua) = self.user_agent {
            args.push(format!("--user-agent={ua}"));
        }
        args.extend(action.iter().cloned());
        args.push(self.url.to_string());

        let _one_at_a_time = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
        let mut child = Command::new(&exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        // Drain both pipes while waiting, so a chatty Chromium never blocks.
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stdout.read_to_end(&mut v);
            v
        });
        let err = thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stderr.read_to_end(&mut v);
            v
        });
        let status = wait_bounded(&mut child, CHROMIUM_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "Chromium did not finish {} within {CHROMIUM_TIMEOUT:?}",
                self.url
            )
        });
        Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        }
    }

    /// The page's DOM once the virtual time budget is spent.
    pub fn dump_dom(&self) -> String {
        let out = self.run(&["--dump-dom".to_string()]);
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && dom.contains("<html"),
            "Chromium failed on {} ({:?}):\n{}",
            self.url,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        dom
    }

    /// Saves a screenshot as `target/test-artifacts/<name>`.
    pub fn screenshot(&self, name: &str, width: u32, height: u32) -> PathBuf {
        let dir = artifacts();
        let file = dir.join(name);
        let _ = std::fs::remove_file(&file);
        let out = self.run(&[
            format!("--screenshot={}", file.display()),
            format!("--window-size={width},{height}"),
        ]);
        assert!(
            file.is_file(),
            "no screenshot of {} ({:?}):\n{}",
            self.url,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let png = std::fs::read(&file).unwrap();
        assert!(
            png.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            file.display()
        );
        file
    }
}

/// `target/test-artifacts/`.
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The text of the element with `id` in a dumped DOM (up to its first
/// child tag), unescaped.
pub fn text_of(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no element #{id} in:\n{dom}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}
