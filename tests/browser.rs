//! The key-settings page of the example service, driven in headless
//! Chromium (Debian's `chromium` and `chromium-driver`) over WebDriver:
//! sign in, create a key through the form and read its token from the
//! page, revoke, reactivate and delete it there while the API says 401 or
//! 200, and see a 403 as a lesser manager. Screenshots at desktop and
//! phone width go to `target/screenshots/`.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server_process::{example_binary, Instance};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(15);

/// chromedriver on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
    /// Chromium's profile, config and cache.
    home: common::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser, or `None` with a printed reason (a failure under
/// `CI=true`).
fn driver() -> Option<Driver> {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(bin).exists() {
            let reason = format!("{bin} is missing: apt-get install chromium chromium-driver");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and {reason}"
            );
            common::skip("the browser test", &reason);
            return None;
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let home = common::TempDir::new("chromium");
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_CACHE_HOME", home.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url, home };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < WAIT, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(driver)
}

/// A headless Chromium session, at desktop size or, with `phone`, as a
/// 390-pixel-wide phone.
async fn browser(driver: &Driver, phone: bool) -> Client {
    let profile = driver
        .home
        .path()
        .join(if phone { "phone" } else { "desktop" });
    let mut options = json!({
        "binary": CHROMIUM,
        "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-quic", "--window-size=1280,900",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    if phone {
        options["mobileEmulation"] = json!({
            "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2.0, "touch": true}
        });
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// The whole page at desktop width, from the top, into `file` in
/// [`screenshots`]; the window goes back to its size after.
async fn desktop_screenshot(page: &Client, file: &str) {
    page.execute(
        "document.activeElement.blur(); window.scrollTo(0, 0)",
        vec![],
    )
    .await
    .expect("blur");
    page.set_window_size(1280, 1500).await.expect("resize");
    let shot = page.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(file), shot).expect("save");
    page.set_window_size(1280, 900).await.expect("resize");
}

async fn css(page: &Client, selector: &str) -> fantoccini::elements::Element {
    page.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
}

/// Waits until the element `selector` finds is shown.
async fn shown(page: &Client, selector: &str) -> fantoccini::elements::Element {
    let start = Instant::now();
    loop {
        let el = css(page, selector).await;
        if el.is_displayed().await.unwrap_or(false) {
            return el;
        }
        if start.elapsed() > WAIT {
            let shot = page.screenshot().await.unwrap_or_default();
            let file = screenshots().join("failure.png");
            let _ = std::fs::write(&file, shot);
            let error = match page.find(Locator::Css("#error")).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            panic!(
                "{selector} never shown; the page says {error:?}; see {}",
                file.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sign_in(page: &Client, token: &str) {
    let input = shown(page, "#admin-key").await;
    input.clear().await.expect("clear");
    // Typed, then Enter: the form works from the keyboard.
    input
        .send_keys(&format!("{token}\u{E007}"))
        .await
        .expect("type");
    shown(page, "#workspace").await;
}

async fn click(page: &Client, selector: &str) {
    shown(page, selector)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {selector}: {e}"));
}

async fn api_status(base: &str, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{base}/v1/contacts"))
        .header("x-api-key", token)
        .send()
        .await
        .expect("send")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_settings_page_manages_keys_in_a_real_browser() {
    let Some(bin) = example_binary() else { return };
    let Some(driver) = driver() else { return };
    let dir = common::TempDir::new("browser");
    let db = dir.path().join("keys.db");
    let mut server = Instance::spawn(&bin, &[("KEYWARD_DB", db.to_str().expect("utf-8"))], &[]);
    let admin = server.started().expect("a bootstrap key");
    let base = server.base.clone();

    // Two keys made elsewhere, so the list has something to show.
    for name in ["CI deploy", "Clay enrichment"] {
        let res = reqwest::Client::new()
            .post(format!("{base}/api-keys"))
            .header("x-api-key", &admin)
            .json(&json!({"name": name, "permissions": ["contacts:read"]}))
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let page = browser(&driver, false).await;
    page.goto(&base).await.expect("open the page");
    sign_in(&page, &admin).await;
    assert!(css(&page, "#who-text")
        .await
        .text()
        .await
        .expect("text")
        .contains("tenant default"));

    // Create through the form: write checks read and locks it.
    css(&page, "#create-name")
        .await
        .send_keys("Zapier production")
        .await
        .expect("type");
    click(
        &page,
        "#create-grid input[data-permission='contacts:write']",
    )
    .await;
    let read = css(&page, "#create-grid input[data-permission='contacts:read']").await;
    assert_eq!(
        read.prop("checked").await.expect("prop").as_deref(),
        Some("true")
    );
    assert_eq!(
        read.prop("disabled").await.expect("prop").as_deref(),
        Some("true")
    );
    click(&page, "input[name=expiry][value=hour]").await;
    click(&page, "#create-submit").await;
    shown(&page, "#token-panel").await;
    let token = css(&page, "#new-token")
        .await
        .prop("value")
        .await
        .expect("value")
        .expect("a token");
    assert!(token.starts_with("sk_"), "{token}");
    let warning = css(&page, "#token-panel .warning")
        .await
        .text()
        .await
        .expect("text");
    assert!(warning.contains("only time"), "{warning}");
    let id = token.split('_').nth(1).expect("id").to_string();
    let row = format!("#key-rows tr[data-key-id='{id}']");
    let expires = css(&page, &format!("{row} td[data-label='Expires']"))
        .await
        .text()
        .await
        .expect("text");
    assert_ne!(expires, "Never", "temporary, one hour");
    desktop_screenshot(&page, "desktop.png").await;

    // The token works against the protected API.
    assert_eq!(api_status(&base, &token).await, StatusCode::OK);

    // Revoke in the page: 401. Reactivate: 200.
    click(&page, "#token-done").await;
    click(&page, &format!("{row} button[data-action='revoke']")).await;
    css(&page, &format!("{row}[data-status='revoked']")).await;
    assert_eq!(api_status(&base, &token).await, StatusCode::UNAUTHORIZED);
    click(&page, &format!("{row} button[data-action='reactivate']")).await;
    css(&page, &format!("{row}[data-status='active']")).await;
    assert_eq!(api_status(&base, &token).await, StatusCode::OK);

    // Rename in the edit dialog.
    click(&page, &format!("{row} button[data-action='edit']")).await;
    let name = shown(&page, "#edit-name").await;
    name.clear().await.expect("clear");
    name.send_keys("Zapier (old)").await.expect("type");
    click(&page, "#edit-save").await;
    let start = Instant::now();
    loop {
        // The list re-renders as the rename lands: an element found just
        // before may be gone by the time its text is read, then look again.
        let text = css(&page, &format!("{row} td[data-label='Name']"))
            .await
            .text()
            .await
            .unwrap_or_default();
        if text == "Zapier (old)" {
            break;
        }
        assert!(start.elapsed() < WAIT, "still named {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Roll with a grace: a new token shown once; both work for now.
    click(&page, &format!("{row} button[data-action='roll']")).await;
    shown(&page, "#roll-dialog").await;
    click(&page, "#roll-confirm").await;
    shown(&page, "#token-panel").await;
    let rolled = css(&page, "#new-token")
        .await
        .prop("value")
        .await
        .expect("value")
        .expect("a token");
    assert_ne!(rolled, token);
    assert_eq!(api_status(&base, &rolled).await, StatusCode::OK);
    assert_eq!(
        api_status(&base, &token).await,
        StatusCode::OK,
        "within the grace"
    );
    click(&page, "#token-done").await;

    // Delete, after the confirmation.
    click(&page, &format!("{row} button[data-action='delete']")).await;
    shown(&page, "#delete-dialog").await;
    click(&page, "#delete-confirm").await;
    let start = Instant::now();
    while page.find(Locator::Css(&row)).await.is_ok() {
        assert!(start.elapsed() < WAIT, "the row stays");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(api_status(&base, &token).await, StatusCode::UNAUTHORIZED);

    // An IP allowlist from the form: the key is listed with it and works
    // only from its networks (this test calls from 127.0.0.1).
    css(&page, "#create-name")
        .await
        .send_keys("Office only")
        .await
        .expect("type");
    click(&page, "#create-grid input[data-permission='contacts:read']").await;
    css(&page, "#create-ips")
        .await
        .send_keys("192.0.2.0/24, 2001:db8::/32")
        .await
        .expect("type");
    click(&page, "#create-submit").await;
    shown(&page, "#token-panel").await;
    let office = css(&page, "#new-token")
        .await
        .prop("value")
        .await
        .expect("value")
        .expect("a token");
    let office_row = format!(
        "#key-rows tr[data-key-id='{}']",
        office.split('_').nth(1).expect("id")
    );
    let listed = css(&page, &format!("{office_row} td[data-label='Name'] .ips"))
        .await
        .text()
        .await
        .expect("text");
    assert_eq!(listed, "Only from 192.0.2.0/24, 2001:db8::/32");
    assert_eq!(api_status(&base, &office).await, StatusCode::FORBIDDEN);
    click(&page, "#token-done").await;
    desktop_screenshot(&page, "allowlist.png").await;

    // A manager who may read but not change keys sees the 403 in the page.
    let reader: Value = reqwest::Client::new()
        .post(format!("{base}/api-keys"))
        .header("x-api-key", &admin)
        .json(&json!({"name": "auditor", "permissions": ["api_keys:read", "contacts:read"]}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    click(&page, "#sign-out").await;
    sign_in(&page, reader["token"].as_str().expect("token")).await;
    css(&page, "#create-name")
        .await
        .send_keys("not allowed")
        .await
        .expect("type");
    click(&page, "#create-submit").await;
    let error = shown(&page, "#error").await.text().await.expect("text");
    assert!(error.contains("api_keys:write"), "{error}");
    assert!(error.contains("[forbidden]"), "{error}");
    page.close().await.expect("close");

    // At phone width, the list is one card per key.
    let phone = browser(&driver, true).await;
    phone.goto(&base).await.expect("open the page");
    sign_in(&phone, &admin).await;
    css(&phone, "#key-rows tr").await;
    let width: Value = phone
        .execute(
            "return [document.documentElement.clientWidth, document.documentElement.scrollWidth]",
            vec![],
        )
        .await
        .expect("width");
    assert_eq!(width[0], json!(390), "{width}");
    assert_eq!(width[0], width[1], "nothing wider than the phone: {width}");
    phone
        .execute(
            "document.getElementById('list-title').scrollIntoView()",
            vec![],
        )
        .await
        .expect("scroll");
    let shot = phone.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join("phone.png"), shot).expect("save");
    phone.close().await.expect("close");
    println!("screenshots in {}", screenshots().display());
}
