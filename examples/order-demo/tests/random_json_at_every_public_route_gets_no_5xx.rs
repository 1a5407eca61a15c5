//! Random requests at every route of `order-demo serve` (calls and sends to every handler,
//! public or internal, of every actor type and some that do not exist, with random keys,
//! random JSON bodies or bytes that are not JSON, random idempotency keys; state reads, event
//! streams, admin listings, the page and its snapshot) never get a 5xx and never panic a
//! handler; memory stays bounded; afterwards the store audits clean, and again once reopened.

use std::time::Duration;

use order_demo::serve::ServeOptions;
use order_demo::{StoreOptions, Workload};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const TYPES: &[&str] = &["order", "inventory_item", "customer", "catalog", "nope"];
const HANDLERS: &[&str] = &[
    "place",
    "status",
    "details",
    "restock",
    "level",
    "inbox",
    "contents",
    "reserve",
    "release",
    "commit",
    "expire",
    "seed",
    "confirm_hold",
    "on_back_in_stock",
    "give_up",
    "notify",
    "ensure",
    "allocate_orders",
    "events",
];
const FIELDS: &[&str] = &[
    "customer",
    "lines",
    "policy",
    "qty",
    "sku",
    "hold_ms",
    "wait_ms",
    "order",
    "attempt",
    "n",
    "skus",
    "customers",
    "notice",
    "event",
];
/// Cases run (each one request).
const CASES: u32 = 400;
/// The most this test process may use: well above what it needs, far below unbounded.
const MEMORY_BOUND: u64 = 1 << 30;

/// One request.
#[derive(Debug, Clone)]
enum Request {
    Call {
        path: String,
        send: bool,
        body: Vec<u8>,
        idempotency: Option<String>,
    },
    Get(String),
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "demo", "sku-0000", "sku-0001", "c-00001", "o-0000001", "o-x", "x",
        ])
        .prop_map(str::to_string),
        2 => ".{0,40}".prop_map(|s: String| s),
        1 => (1usize..1_100).prop_map(|n| "k".repeat(n)),
    ]
    .boxed()
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e30f64..1e30).prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        prop::sample::select(vec!["Shipped", "sku-0000", "c-00001", "o-1"]).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(FIELDS.to_vec()).prop_map(str::to_string),
                        ".{0,8}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A `place` body with the right shape and random values.
fn place_body() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("c-00001".to_string()), ".{0,12}"],
        prop::collection::vec(
            (
                prop_oneof![
                    prop::sample::select(vec!["sku-0000", "sku-0001", "sku-0002"])
                        .prop_map(str::to_string),
                    ".{0,12}"
                ],
                prop_oneof![0u32..5, any::<u32>()],
            ),
            0..4,
        ),
        prop_oneof![1u64..5_000, any::<u64>()],
        prop_oneof![1u64..5_000, any::<u64>()],
    )
        .prop_map(|(customer, lines, hold_ms, wait_ms)| {
            let lines: Vec<Value> = lines
                .into_iter()
                .map(|(sku, qty)| json!({"sku": sku, "qty": qty}))
                .collect();
            json!({"customer": customer, "lines": lines,
                   "policy": {"hold_ms": hold_ms, "wait_ms": wait_ms}})
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        4 => place_body().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
    ]
}

/// Every byte but the unreserved ones percent-encoded, so any key fits a path segment.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn name(known: &[&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(known.to_vec()).prop_map(str::to_string),
        1 => "[a-z_%]{0,8}".prop_map(|s: String| s),
    ]
    .boxed()
}

fn target() -> BoxedStrategy<(String, String)> {
    (name(TYPES), key()).boxed()
}

fn call() -> BoxedStrategy<Request> {
    (
        target(),
        name(HANDLERS),
        any::<bool>(),
        body(),
        prop::option::of(prop_oneof!["[ -~]{1,20}", ".{0,300}"]),
    )
        .prop_map(
            |((ty, key), handler, send, body, idempotency)| Request::Call {
                path: format!("/{}/{}/{}", segment(&ty), segment(&key), segment(&handler)),
                send,
                body,
                idempotency,
            },
        )
        .boxed()
}

fn read() -> BoxedStrategy<Request> {
    prop_oneof![
        2 => target().prop_map(|(ty, key)| Request::Get(format!("/{}/{}", segment(&ty), segment(&key)))),
        1 => target().prop_map(|(ty, key)| {
            Request::Get(format!("/{}/{}/events", segment(&ty), segment(&key)))
        }),
        1 => (name(TYPES), "[a-z0-9-]{0,10}", 0usize..2_000).prop_map(|(ty, after, limit)| {
            Request::Get(format!("/admin/{ty}?after={after}&limit={limit}"))
        }),
        1 => prop::sample::select(vec!["/", "/demo/snapshot", "/health", "/metrics"])
            .prop_map(|p| Request::Get(p.to_string())),
    ]
    .boxed()
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![3 => call(), 1 => read()]
}

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

#[test]
fn random_requests_get_no_5xx_and_the_store_audits_after() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (rt, live) = tokio.block_on(async {
        let rt = order_demo::open(dir.path(), StoreOptions::default())
            .await
            .unwrap();
        let shop = Workload {
            skus: 3,
            customers: 3,
            initial_stock: 50,
            ..Workload::default()
        };
        order_demo::seed(&rt, &shop).await.unwrap();
        let live = order_demo::serve::start(&rt, ServeOptions::loopback())
            .await
            .unwrap();
        (rt, live)
    });
    let base = format!("http://{}", live.local_addr());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    // Answers by class, to show the run reached handlers and was refused too.
    let answered = std::cell::RefCell::new([0u32; 6]);
    let result = runner.run(&request(), |request| {
        let (status, body) = tokio.block_on(async {
            let response = match &request {
                Request::Call {
                    path,
                    send,
                    body,
                    idempotency,
                } => {
                    let url = format!("{base}{path}{}", if *send { "/send" } else { "" });
                    let mut builder = client
                        .post(url)
                        .header("content-type", "application/json")
                        .body(body.clone());
                    if let Some(key) = idempotency
                        && let Ok(value) = reqwest::header::HeaderValue::from_str(key)
                    {
                        builder = builder.header("idempotency-key", value);
                    }
                    builder.send().await
                }
                Request::Get(path) => client.get(format!("{base}{path}")).send().await,
            }
            .expect("the server answers");
            let status = response.status().as_u16();
            // An event stream never ends: its headers are the answer.
            let streaming = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let body = if streaming {
                String::new()
            } else {
                response.text().await.unwrap_or_default()
            };
            (status, body)
        });
        answered.borrow_mut()[usize::from(status / 100)] += 1;
        prop_assert!(status < 500, "{request:?} -> {status} {body}");
        if status >= 400 {
            let error: Value = serde_json::from_str(&body)
                .map_err(|e| TestCaseError::fail(format!("{request:?}: {status} {body:?}: {e}")))?;
            prop_assert!(error["error"].is_string(), "{request:?} -> {status} {body}");
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let answered = answered.into_inner();
    println!("answers by class (1xx..5xx): {:?}", &answered[1..]);
    assert!(answered[2] > 0 && answered[4] > 0, "{answered:?}");
    assert!(
        peak_rss() < MEMORY_BOUND,
        "peak RSS {} MiB",
        peak_rss() >> 20
    );

    tokio.block_on(async {
        assert_eq!(rt.stats().panics, 0, "no handler panicked");
        live.stop().await.unwrap();
        let audit = order_demo::audit(&rt, &[]).await.unwrap();
        assert!(audit.passed(), "{audit}");
        rt.shutdown().await.unwrap();
        let rt = order_demo::open(dir.path(), StoreOptions::default())
            .await
            .unwrap();
        let audit = order_demo::audit(&rt, &[]).await.unwrap();
        assert!(audit.passed(), "after reopening: {audit}");
        rt.shutdown().await.unwrap();
    });
}
