//! Thousands of generated bad requests (unknown types and handlers, garbage and truncated
//! JSON, wrong types, oversized bodies, bad keys, bad idempotency keys, wrong methods, bad
//! queries, undecodable paths) all get a 4xx with a JSON error body; no handler panics, no
//! 5xx, and the server answers good requests afterwards.

use crate::support;

use futures::StreamExt;
use gears::http::HttpConfig;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::{decode, error_name, serve};

const REQUESTS: usize = 3000;
const LIMIT: usize = 1024;

struct Bad {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    idempotency: Option<Vec<u8>>,
}

fn garbage(rng: &mut SmallRng, max: usize) -> Vec<u8> {
    let n = rng.random_range(0..max);
    (0..n).map(|_| rng.random()).collect()
}

fn word(rng: &mut SmallRng) -> String {
    let n = rng.random_range(1..12);
    (0..n)
        .map(|_| char::from(rng.random_range(b'a'..=b'z')))
        .collect()
}

fn bad_request(rng: &mut SmallRng) -> Bad {
    let post = |path: String, body: Vec<u8>| Bad {
        method: "POST",
        path,
        body,
        idempotency: None,
    };
    let good = br#"{"amount": 3}"#.to_vec();
    match rng.random_range(0..11) {
        0 => post(format!("/x{}/k/deposit", word(rng)), good),
        1 => post(format!("/account/k/x{}", word(rng)), good),
        2 => post("/account/k/deposit".into(), garbage(rng, 64)),
        3 => {
            // Truncated JSON.
            let cut = rng.random_range(1..good.len() - 1);
            post("/account/k/deposit".into(), good[..cut].to_vec())
        }
        4 => {
            let value = match rng.random_range(0..6) {
                0 => "\"three\"".to_string(),
                1 => "3.5".to_string(),
                2 => "null".to_string(),
                3 => "[1,2]".to_string(),
                4 => format!("{}0", i64::MAX),
                _ => "{}".to_string(),
            };
            let body = match rng.random_range(0..3) {
                0 => format!(r#"{{"amount": {value}}}"#),
                1 => format!(r#"{{"amount": 1, "{}": {value}}}"#, word(rng)),
                _ => format!(r#"{{"{}": 1}}"#, word(rng)),
            };
            post("/account/k/deposit".into(), body.into_bytes())
        }
        5 => {
            let pad = "x".repeat(rng.random_range(LIMIT..4 * LIMIT));
            let path = if rng.random() {
                "/account/k/deposit"
            } else {
                "/account/k/deposit/send"
            };
            post(
                path.into(),
                format!(r#"{{"amount": 1, "pad": "{pad}"}}"#).into_bytes(),
            )
        }
        6 => {
            let key = if rng.random() {
                "k".repeat(gears::MAX_KEY_LEN + rng.random_range(1..100))
            } else {
                format!("a%{:02X}b", rng.random_range(0..0x20))
            };
            post(format!("/account/{key}/deposit"), good)
        }
        7 => Bad {
            method: "POST",
            path: "/account/k/deposit".into(),
            body: good,
            idempotency: Some(if rng.random() {
                (0..rng.random_range(1..20))
                    .map(|_| rng.random_range(0x80..=0xFF))
                    .collect()
            } else {
                vec![b'i'; 300]
            }),
        },
        8 => Bad {
            method: ["PUT", "PATCH", "DELETE", "GET"][rng.random_range(0..4)],
            path: "/account/k/deposit".into(),
            body: good,
            idempotency: None,
        },
        9 => Bad {
            method: "GET",
            path: format!(
                "/admin/account?limit={}",
                ["0", "-1", "x", "100000", "1e3"][rng.random_range(0..5)]
            ),
            body: Vec::new(),
            idempotency: None,
        },
        _ => post(
            format!(
                "/account/%{:02X}%{:02X}/deposit",
                rng.random_range(0x80..=0xFF),
                rng.random_range(0x80..=0xBF) ^ 0x40
            ),
            good,
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_bad_requests_are_all_client_errors() {
    let s = serve(HttpConfig::default().body_limit(LIMIT), |b| b).await;
    let mut rng = SmallRng::seed_from_u64(7);
    let requests: Vec<Bad> = (0..REQUESTS).map(|_| bad_request(&mut rng)).collect();
    let client = &s.client;
    let base = &s.base;
    let answers: Vec<(u16, String, String)> = futures::stream::iter(requests)
        .map(|bad| async move {
            let mut request = client
                .request(bad.method.parse().unwrap(), format!("{base}{}", bad.path))
                .body(bad.body);
            if let Some(key) = bad.idempotency {
                request = request.header(
                    "Idempotency-Key",
                    reqwest::header::HeaderValue::from_bytes(&key).unwrap(),
                );
            }
            let (status, _, json) = decode(request.send().await.unwrap()).await;
            (status, error_name(&json).to_string(), bad.path)
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for (status, error, path) in &answers {
        assert!((400..500).contains(status), "{status} {error} for {path}");
        *by_status.entry(*status).or_default() += 1;
    }
    for status in [400, 404, 405, 413] {
        assert!(
            by_status.contains_key(&status),
            "{status} generated: {by_status:?}"
        );
    }

    // Still healthy: nothing panicked, nothing ran, and good requests work.
    assert_eq!(s.rt.stats().panics, 0);
    let (status, _, _) = s.get("/health").await;
    assert_eq!(status, 200);
    let (status, _, json) = s.post("/account/k/balance", "").await;
    assert_eq!(
        (status, json),
        (200, serde_json::json!(0)),
        "no bad deposit ran"
    );
    let (status, _, json) = s.post("/account/k/deposit", r#"{"amount": 3}"#).await;
    assert_eq!((status, json), (200, serde_json::json!(3)));
    s.stop().await;
}
