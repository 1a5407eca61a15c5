//! An idempotent HTTP call's result is stored in the actor's record, in the same batch as
//! the state change it answers: after a restart, a retry is answered from it and the
//! handler does not run again.

use gears::http::{HttpConfig, serve};
use gears_tests::Counter;

async fn post(url: &str, key: &str, body: &str) -> (u16, bool, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("Idempotency-Key", key)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotency-replayed");
    (status, replayed, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_restart_gets_the_stored_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut answers = Vec::new();
    for round in 0..3 {
        let rt = gears_tests::open(dir.path()).await;
        let server = serve(
            rt.clone(),
            HttpConfig::default().bind(([127, 0, 0, 1], 0).into()),
        )
        .await
        .unwrap();
        let url = format!("http://{}/counter/c/add", server.local_addr());
        // Many concurrent retries of one request: exactly one runs the handler.
        let tries = (0..8).map(|_| post(&url, "add-once", r#"{"n":5}"#));
        let results = futures::future::join_all(tries).await;
        let fresh = results.iter().filter(|(_, replayed, _)| !replayed).count();
        assert_eq!(fresh, usize::from(round == 0), "round {round}: {results:?}");
        for (status, _, body) in results {
            assert_eq!((status, body), (200, serde_json::json!(5)));
        }
        // A refused request is stored too, and replayed after the restart.
        let (status, replayed, refused) = post(
            &url.replace("/add", "/add_checked"),
            "too-big",
            r#"{"n":100,"limit":10}"#,
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(replayed, round > 0);
        answers.push(refused);
        // The same request written differently (key order, whitespace) is the same request.
        let (status, replayed, _) = post(
            &url.replace("/add", "/add_checked"),
            "too-big",
            "{ \"limit\": 10,\n  \"n\": 100 }",
        )
        .await;
        assert_eq!((status, replayed), (422, true));
        assert_eq!(rt.get::<Counter>("c").get().await.unwrap(), 5);
        server.shutdown().await.unwrap();
        rt.shutdown().await.unwrap();
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert_eq!(answers[0]["error"], "TooBig", "{:?}", answers[0]);
}
