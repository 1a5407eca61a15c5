//! The bearer token: with `TokenScope::Admin` it guards the admin routes and `/metrics`
//! while calls stay open; with `TokenScope::All` every route but `/health`. Unchosen, the
//! scope is `Admin` on loopback and `All` on any other address. The `Bearer` scheme is
//! matched in any case. A `GET` may carry the token as `?access_token=` instead.

use crate::support;

use std::net::SocketAddr;

use gears::http::{HttpConfig, TokenScope};
use support::{Account, decode, error_name, serve};

const TOKEN: &str = "s3cret-token";

async fn status(s: &support::Served, method: &str, path: &str, token: Option<&str>) -> u16 {
    let mut request =
        s.client
            .request(method.parse().unwrap(), s.url(path))
            .body(if method == "POST" {
                r#"{"amount":1}"#
            } else {
                ""
            });
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let (status, headers, json) = decode(request.send().await.unwrap()).await;
    if status == 401 {
        assert_eq!(error_name(&json), "unauthorized");
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    status
}

const ADMIN: [(&str, &str); 5] = [
    ("GET", "/admin/account"),
    ("GET", "/admin/account/k/timers"),
    ("DELETE", "/admin/account/gone"),
    ("GET", "/admin/~dead-letters"),
    ("GET", "/metrics"),
];
const CALLS: [(&str, &str); 3] = [
    ("POST", "/account/k/deposit"),
    ("POST", "/account/k/deposit/send"),
    ("GET", "/account/k"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_scope_guards_admin_routes_only() {
    let s = serve(HttpConfig::default().bearer_token(TOKEN), |b| b).await;
    for (method, path) in ADMIN {
        assert_eq!(status(&s, method, path, None).await, 401, "{method} {path}");
        assert_eq!(
            status(&s, method, path, Some("wrong")).await,
            401,
            "{method} {path}"
        );
        assert_eq!(
            status(&s, method, path, Some("s3cret-tokeN")).await,
            401,
            "{method} {path}"
        );
        assert!(
            status(&s, method, path, Some(TOKEN)).await < 300,
            "{method} {path}"
        );
    }
    for (method, path) in CALLS {
        assert!(
            status(&s, method, path, None).await < 300,
            "{method} {path}"
        );
    }
    assert_eq!(status(&s, "GET", "/health", None).await, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_scope_guards_everything_but_health() {
    let config = HttpConfig::default()
        .bearer_token(TOKEN)
        .token_scope(TokenScope::All);
    let s = serve(config, |b| b).await;
    for (method, path) in ADMIN
        .iter()
        .chain(&CALLS)
        .chain(&[("GET", "/account/k/events")])
    {
        assert_eq!(status(&s, method, path, None).await, 401, "{method} {path}");
        assert_eq!(
            status(&s, method, path, Some("wrong")).await,
            401,
            "{method} {path}"
        );
    }
    let k = s.rt.get::<Account>("k");
    assert_eq!(
        k.balance().await.unwrap(),
        0,
        "nothing ran without the token"
    );
    for (method, path) in ADMIN.iter().chain(&CALLS) {
        assert!(
            status(&s, method, path, Some(TOKEN)).await < 300,
            "{method} {path}"
        );
    }
    assert!(k.balance().await.unwrap() >= 1);
    assert_eq!(status(&s, "GET", "/health", None).await, 200);
    s.stop().await;
}

#[test]
fn the_default_scope_follows_the_bound_address() {
    let on = |addr: &str| HttpConfig::default().bind(addr.parse::<SocketAddr>().unwrap());
    for loopback in ["127.0.0.1:8080", "127.0.0.2:0", "[::1]:8080"] {
        assert_eq!(
            on(loopback).bearer_token(TOKEN).effective_token_scope(),
            TokenScope::Admin,
            "{loopback}"
        );
    }
    for exposed in ["0.0.0.0:8080", "[::]:8080", "192.168.1.20:80", "10.0.0.1:0"] {
        assert_eq!(
            on(exposed).bearer_token(TOKEN).effective_token_scope(),
            TokenScope::All,
            "{exposed}"
        );
        // A scope chosen explicitly wins, in either order.
        assert_eq!(
            on(exposed)
                .token_scope(TokenScope::Admin)
                .bearer_token(TOKEN)
                .effective_token_scope(),
            TokenScope::Admin
        );
    }
    assert_eq!(
        HttpConfig::default().effective_token_scope(),
        TokenScope::Admin
    );
    assert_eq!(
        HttpConfig::default()
            .token_scope(TokenScope::All)
            .effective_token_scope(),
        TokenScope::All
    );
}

/// Served on every interface with a token and no scope chosen: calls need the token too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_on_a_non_loopback_address_guards_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let rt = gears::Runtime::builder()
        .path(dir.path())
        .register::<Account>()
        .open()
        .await
        .unwrap();
    let config = HttpConfig::default()
        .bind(([0, 0, 0, 0], 0).into())
        .bearer_token(TOKEN);
    let server = gears::http::serve(rt.clone(), config).await.unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", server.local_addr().port());
    let client = reqwest::Client::new();
    for (method, path) in ADMIN
        .iter()
        .chain(&CALLS)
        .chain(&[("GET", "/account/k/events")])
    {
        let response = client
            .request(method.parse().unwrap(), url(path))
            .body(r#"{"amount":1}"#)
            .send()
            .await
            .unwrap();
        let (status, _, json) = decode(response).await;
        assert_eq!(status, 401, "{method} {path}: {json}");
        assert_eq!(error_name(&json), "unauthorized");
    }
    let response = client
        .post(url("/account/k/deposit"))
        .bearer_auth(TOKEN)
        .body(r#"{"amount":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let health = client.get(url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    server.shutdown().await.unwrap();
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let s = serve(HttpConfig::default().bearer_token(TOKEN), |b| b).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = s
            .client
            .get(s.url("/admin/account"))
            .header("Authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{scheme}");
    }
    for wrong in [
        format!("Basic {TOKEN}"),
        format!("Bearer{TOKEN}"),
        TOKEN.to_string(),
        "Bearer ".to_string(),
    ] {
        let response = s
            .client
            .get(s.url("/admin/account"))
            .header("Authorization", &wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{wrong}");
    }
    s.stop().await;
}

/// A browser opening a page or an `EventSource` cannot set a header: a `GET` may carry the
/// token as `?access_token=` (RFC 6750 §2.3); other methods may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_may_carry_the_token_in_the_query() {
    let s = serve(
        HttpConfig::default()
            .bearer_token(TOKEN)
            .token_scope(TokenScope::All),
        |b| b,
    )
    .await;
    let get = |path: String| {
        let request = s.client.get(s.url(&path));
        async move { decode(request.send().await.unwrap()).await.0 }
    };
    assert_eq!(get(format!("/account/k?access_token={TOKEN}")).await, 200);
    assert_eq!(
        get(format!("/admin/account?access_token={TOKEN}")).await,
        200
    );
    assert_eq!(get("/account/k?access_token=wrong".into()).await, 401);
    assert_eq!(get("/account/k?access_token=".into()).await, 401);
    assert_eq!(get("/account/k".into()).await, 401);
    let post = s
        .client
        .post(s.url(&format!("/account/k/deposit?access_token={TOKEN}")))
        .body(r#"{"amount":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 401, "a POST needs the header");
    s.stop().await;
}
