//! A real browser for the console's tests: Debian's headless `chromium`,
//! driven over WebDriver by its `chromedriver` (both installed by
//! `scripts/test`), through fantoccini. Each call blocks until the browser
//! answers, as the rest of the harness does.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use super::eventually;

pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Client,
    driver: Child,
    /// `https://127.0.0.1:PORT`: the control plane the paths go to.
    base: String,
}

/// Where screenshots go: `target/console-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("console-screenshots")
}

impl Browser {
    /// A headless browser at 1280×800 that trusts the control plane at
    /// `base` (its certificate is from the control plane's own CA).
    pub fn open(base: &str) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/test installs it)");
        eventually(Duration::from_secs(20), "chromedriver listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let capabilities = json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "args": [
                    "--headless=new",
                    // Tests may run as root, where Chromium's sandbox cannot.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,800",
                ]
            }
        });
        let client = runtime
            .block_on(
                // chromedriver listens on loopback in plain HTTP, so no TLS
                // connector (and no second rustls crypto provider) is needed.
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities.as_object().unwrap().clone())
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .expect("a chromium session through chromedriver");
        Browser {
            runtime,
            client,
            driver,
            base: base.to_string(),
        }
    }

    /// Opens `path` (`/ui/...`) of the control plane.
    pub fn goto(&self, path: &str) {
        self.runtime
            .block_on(self.client.goto(&format!("{}{path}", self.base)))
            .unwrap();
    }

    /// The path and query the browser is at.
    pub fn at(&self) -> String {
        let url = self.runtime.block_on(self.client.current_url()).unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// The visible text of the first element `css` matches, or `None` if
    /// none does.
    pub fn text(&self, css: &str) -> Option<String> {
        self.runtime.block_on(async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.text().await.ok()
        })
    }

    /// Waits until the element `css` matches shows `wanted`, and returns
    /// its text; fails with what the page showed instead.
    #[track_caller]
    pub fn wait_for_text(&self, css: &str, wanted: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let text = self.text(css);
            if let Some(text) = text.as_ref().filter(|text| text.contains(wanted)) {
                return text.clone();
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "{css} did not show {wanted:?} at {} within {within:?}; the page showed:\n{}",
                    self.at(),
                    self.run("return document.documentElement.outerHTML;")
                        .as_str()
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Types `value` into the field `css` matches, after clearing it.
    pub fn fill(&self, css: &str, value: &str) {
        self.runtime.block_on(async {
            let field = self.client.find(Locator::Css(css)).await.unwrap();
            field.clear().await.unwrap();
            field.send_keys(value).await.unwrap();
        });
    }

    /// Clicks the first element `css` matches.
    pub fn click(&self, css: &str) {
        self.runtime.block_on(async {
            let element = self
                .client
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|err| panic!("{css} on {}: {err}", self.at()));
            element.click().await.unwrap();
        });
    }

    /// Runs `script` in the page and returns what it returned.
    pub fn run(&self, script: &str) -> serde_json::Value {
        self.runtime
            .block_on(self.client.execute(script, Vec::new()))
            .unwrap()
    }

    /// Resizes the window (the page's viewport follows).
    pub fn resize(&self, width: u32, height: u32) {
        self.runtime
            .block_on(self.client.set_window_size(width, height))
            .unwrap();
    }

    /// Saves a PNG of the window as `target/console-screenshots/NAME.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.runtime.block_on(self.client.screenshot()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The controls of the page that a screen reader could not name: a
    /// field without a label, a button or link without text or
    /// `aria-label`.
    pub fn unlabelled_controls(&self) -> Vec<String> {
        let found = self.run(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button, a')]
                .filter(e => {
                    if (e.matches('input, select, textarea')) return e.labels.length === 0 && !e.getAttribute('aria-label');
                    return !e.textContent.trim() && !e.getAttribute('aria-label');
                })
                .map(e => e.outerHTML.slice(0, 120));",
        );
        serde_json::from_value(found).unwrap()
    }

    /// Whether the page is wider than the window (it would scroll
    /// sideways as a whole, rather than a wide table scrolling in place).
    pub fn overflows(&self) -> bool {
        self.run("return document.documentElement.scrollWidth > window.innerWidth + 1;")
            .as_bool()
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = self.runtime.block_on(client.close());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
