//! Off loopback every route but `/health` needs the token, the routes an embedder adds with
//! `serve_with` (pages, their JSON and event streams) included; and a server on a
//! non-loopback address with a route open to anyone (no token, or a token scoped to the
//! admin routes) refuses to start unless `allow_unauthenticated(true)` says so.

use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::routing::get;
use gears::http::{HttpConfig, TokenScope};
use support::{Account, decode, error_name};

const TOKEN: &str = "s3cret-token";

async fn open_runtime(dir: &tempfile::TempDir) -> gears::Runtime {
    gears::Runtime::builder()
        .path(dir.path())
        .register::<Account>()
        .open()
        .await
        .unwrap()
}

/// An embedder's routes: a page, its data, and a live stream.
fn page() -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { axum::response::Html("<p>live</p>") }))
        .route(
            "/demo/snapshot",
            get(|| async { axum::Json(serde_json::json!({"orders": 7})) }),
        )
        .route(
            "/demo/live",
            get(|| async {
                let ticks = futures::stream::iter(0..3)
                    .map(|n| Ok::<_, Infallible>(Event::default().data(n.to_string())));
                Sse::new(ticks)
            }),
        )
}

use futures::StreamExt;

fn exposed() -> HttpConfig {
    HttpConfig::default().bind(([0, 0, 0, 0], 0).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_server_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open_runtime(&dir).await;
    let admin_only = exposed().bearer_token(TOKEN).token_scope(TokenScope::Admin);
    for (config, what) in [(exposed(), "no token"), (admin_only, "admin scope")] {
        let error = gears::http::serve_with(rt.clone(), config, page())
            .await
            .expect_err(what);
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{what}");
        let message = error.to_string();
        for hint in ["0.0.0.0", "bearer_token", "allow_unauthenticated"] {
            assert!(message.contains(hint), "{what}: {message}");
        }
    }
    // Refused before binding: the port is free for a correct configuration.
    let server = gears::http::serve(rt.clone(), exposed().bearer_token(TOKEN))
        .await
        .unwrap();
    server.shutdown().await.unwrap();
    // Loopback needs no token.
    let server = gears::http::serve(
        rt.clone(),
        HttpConfig::default().bind(([127, 0, 0, 1], 0).into()),
    )
    .await
    .unwrap();
    server.shutdown().await.unwrap();
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_unauthenticated_serves_an_exposed_server_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open_runtime(&dir).await;
    let server = gears::http::serve_with(rt.clone(), exposed().allow_unauthenticated(true), page())
        .await
        .unwrap();
    let url = format!(
        "http://127.0.0.1:{}/account/k/deposit",
        server.local_addr().port()
    );
    let response = reqwest::Client::new()
        .post(url)
        .body(r#"{"amount":4}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(rt.get::<Account>("k").balance().await.unwrap(), 4);
    server.shutdown().await.unwrap();
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_server_guards_the_embedders_routes_too() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open_runtime(&dir).await;
    let server = gears::http::serve_with(rt.clone(), exposed().bearer_token(TOKEN), page())
        .await
        .unwrap();
    let port = server.local_addr().port();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    for path in ["/", "/demo/snapshot", "/demo/live"] {
        for token in [None, Some("wrong")] {
            let mut request = client.get(url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let (status, headers, json) = decode(request.send().await.unwrap()).await;
            assert_eq!(status, 401, "{path} {token:?}: {json}");
            assert_eq!(error_name(&json), "unauthorized");
            assert_eq!(headers["www-authenticate"], "Bearer");
        }
        let response = client
            .get(url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let body = response.text().await.unwrap();
        assert!(!body.is_empty(), "{path}");
    }
    let health = client.get(url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    server.shutdown().await.unwrap();
    rt.shutdown().await.unwrap();
}

/// On loopback the scope defaults to the admin routes: the embedder's pages stay open
/// there, as the actor routes do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loopback_the_embedders_routes_follow_the_actor_routes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open_runtime(&dir).await;
    let on = |scope: Option<TokenScope>| {
        let config = HttpConfig::default()
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .bearer_token(TOKEN);
        match scope {
            Some(scope) => config.token_scope(scope),
            None => config,
        }
    };
    for (scope, want) in [(None, 200), (Some(TokenScope::All), 401)] {
        let server = gears::http::serve_with(rt.clone(), on(scope), page())
            .await
            .unwrap();
        let base = format!("http://{}", server.local_addr());
        for path in ["/", "/demo/snapshot", "/account/k"] {
            let response = reqwest::get(format!("{base}{path}")).await.unwrap();
            assert_eq!(response.status().as_u16(), want, "{scope:?} {path}");
        }
        server.shutdown().await.unwrap();
    }
    rt.shutdown().await.unwrap();
}
