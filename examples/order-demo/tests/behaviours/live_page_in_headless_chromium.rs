//! The live page in a real browser: headless Chromium (Debian's `chromium`) loads `/` while
//! the simulation runs, the page's numbers change as snapshots arrive over server-sent
//! events, and a screenshot is kept as a test artefact; on a server whose token guards every
//! route, the page opened as `/?access_token=...` works the same (it sends the token on its
//! own requests). Fails if Chromium is missing (CI installs it: see `.ci/run`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gears::Durability;
use gears::http::{HttpConfig, TokenScope};
use order_demo::StoreOptions;
use order_demo::serve::{ServeOptions, Simulation};

/// Snapshots the page waits for before it stops listening (`?stop_after=`).
const UPDATES: u32 = 5;

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing: install Debian's `chromium` package (`.ci/run` does), or set CHROMIUM",
        path.display()
    );
    path
}

/// Runs headless Chromium on `url` with `args`; its stdout. Killed after 60 s.
fn run_chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,1500",
            // Virtual time waits for the pending event stream, which the page closes after
            // `UPDATES` snapshots; the budget then runs out at once.
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {:?}",
        output.status
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text of the element with `id` in a dumped DOM, as a number.
fn number(dom: &str, id: &str) -> i64 {
    let marker = format!("id=\"{id}\">");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("#{id} in the page"))
        + marker.len();
    let text = &dom[start..start + dom[start..].find('<').unwrap()];
    text.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("#{id} shows a number, not {text:?}"))
}

/// A `data-` attribute of `<body>`.
fn body_data(dom: &str, name: &str) -> String {
    let body = &dom[dom.find("<body").unwrap()..];
    let body = &body[..body.find('>').unwrap()];
    let marker = format!("data-{name}=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("data-{name} in {body}"))
        + marker.len();
    body[start..start + body[start..].find('"').unwrap()].to_string()
}

fn artefact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_page_shows_numbers_that_change() {
    // Fail before starting anything if the browser is missing.
    chromium();
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let rt = order_demo::open(dir.path(), options).await.unwrap();
    let live = order_demo::serve::start(
        &rt,
        ServeOptions {
            http: HttpConfig::default().bind(([127, 0, 0, 1], 0).into()),
            simulation: Some(Simulation {
                rate: 100,
                ..Simulation::default()
            }),
            tick: Duration::from_millis(250),
            ..ServeOptions::default()
        },
    )
    .await
    .unwrap();
    let url = format!("http://{}/?stop_after={UPDATES}", live.local_addr());

    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || run_chromium(&url, &["--dump-dom"])
    })
    .await
    .unwrap();
    assert_eq!(
        body_data(&dom, "done"),
        "true",
        "the page heard {UPDATES} snapshots"
    );
    assert_eq!(body_data(&dom, "updates"), UPDATES.to_string());
    // The counts moved while the page listened.
    assert!(
        number(&dom, "orders-since-open") > 0,
        "orders placed while the page was open"
    );
    let placed = number(&dom, "orders-placed");
    let by_status = number(&dom, "orders-shipping")
        + number(&dom, "orders-backordered")
        + number(&dom, "orders-cancelled");
    assert_eq!(placed, by_status, "placed is the sum of the statuses");
    assert!(number(&dom, "turns") > 0);
    assert!(number(&dom, "activations") > 0);
    for sku in ["sku-0000", "sku-0023"] {
        assert!(dom.contains(sku), "{sku} has a stock bar");
    }
    std::fs::write(artefact("order-demo-live-page.html"), &dom).unwrap();

    let screenshot = artefact("order-demo-live-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let arg = format!("--screenshot={}", screenshot.display());
    tokio::task::spawn_blocking(move || run_chromium(&url, &[&arg]))
        .await
        .unwrap();
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    println!("screenshot of the live page: {}", screenshot.display());

    live.stop().await.unwrap();
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_page_with_a_token_works_in_the_browser() {
    chromium();
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let rt = order_demo::open(dir.path(), options).await.unwrap();
    // The scope an address off loopback gets, on loopback for the test.
    let live = order_demo::serve::start(
        &rt,
        ServeOptions {
            http: HttpConfig::default()
                .bind(([127, 0, 0, 1], 0).into())
                .token_scope(TokenScope::All),
            token: Some("s3cret-t0ken".into()),
            simulation: Some(Simulation {
                rate: 100,
                ..Simulation::default()
            }),
            tick: Duration::from_millis(250),
            ..ServeOptions::default()
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", live.local_addr());
    // Without the token, neither the page nor its data.
    for path in ["/", "/demo/snapshot", "/demo/live"] {
        let status = reqwest::get(format!("{base}{path}"))
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 401, "{path}");
    }
    let url = format!("{base}/?access_token=s3cret-t0ken&stop_after={UPDATES}");
    let dom = tokio::task::spawn_blocking(move || run_chromium(&url, &["--dump-dom"]))
        .await
        .unwrap();
    assert_eq!(
        body_data(&dom, "done"),
        "true",
        "the page heard {UPDATES} snapshots"
    );
    assert!(number(&dom, "turns") > 0);
    assert!(dom.contains("sku-0000"), "stock bars are drawn");
    live.stop().await.unwrap();
    rt.shutdown().await.unwrap();
}
