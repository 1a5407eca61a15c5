//! The bearer token: with `TokenScope::Admin` it guards the admin routes and `/metrics`
//! while calls stay open; with `TokenScope::All` every route but `/health`.

#[path = "http/support.rs"]
mod support;

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

const ADMIN: [(&str, &str); 4] = [
    ("GET", "/admin/account"),
    ("GET", "/admin/account/k/timers"),
    ("DELETE", "/admin/account/gone"),
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
