//! `GET /openapi.json` of `order-demo serve`: the document validates against the OpenAPI 3.1
//! schema; its schemas compile and their references resolve; every route it lists answers
//! (no `404 not_found`, no `405`, no 5xx); the README's `Order::place` example is valid
//! against the documented body and its answer against the documented result.

use order_demo::serve::ServeOptions;
use order_demo::{InventoryItem, StoreOptions};
use serde_json::{Value, json};

const OAS_31_SCHEMA: &str = include_str!("../fixtures/openapi-3.1-schema.json");

/// A validator for the schema at `pointer` inside `document` (its `$ref`s resolve against
/// the document, as OpenAPI's do).
fn validator_at(document: &Value, pointer: &str) -> jsonschema::Validator {
    let mut root = document.clone();
    root["$ref"] = Value::String(format!("#{pointer}"));
    jsonschema::draft202012::new(&root)
        .unwrap_or_else(|e| panic!("the schema at {pointer} does not compile: {e}"))
}

/// `~` and `/` escaped for a JSON pointer, braces for a URI fragment.
fn escape(segment: &str) -> String {
    segment
        .replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

/// The README's `Order::place` request body: the `-d '...'` after `/order/o-web-1/place`.
fn readme_place_body() -> Value {
    let readme = include_str!("../../../../README.md");
    let at = readme
        .find("/order/o-web-1/place")
        .expect("the README shows Order::place over HTTP");
    let rest = &readme[at..];
    let start = rest.find("-d '").expect("with a body") + 4;
    let end = start + rest[start..].find('\'').expect("a closed quote");
    serde_json::from_str(&rest[start..end]).expect("the README's body is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_openapi_and_every_route_it_lists_answers() {
    let dir = tempfile::tempdir().unwrap();
    let rt = order_demo::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    rt.get::<InventoryItem>("sku-0003").seed(5).await.unwrap();
    let live = order_demo::serve::start(&rt, ServeOptions::loopback())
        .await
        .unwrap();
    let base = format!("http://{}", live.local_addr());
    let client = reqwest::Client::new();

    let response = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();

    // The document is OpenAPI 3.1.
    let oas: Value = serde_json::from_str(OAS_31_SCHEMA).unwrap();
    let oas = jsonschema::draft202012::new(&oas).unwrap();
    let errors: Vec<String> = oas
        .iter_errors(&document)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "not valid OpenAPI 3.1: {errors:#?}");
    assert_eq!(document["openapi"], "3.1.0");

    // Public handlers are listed with their doc comments; internal steps are not.
    let paths = document["paths"].as_object().unwrap();
    for listed in ["/order/{key}/place", "/inventory_item/{key}/restock"] {
        assert!(paths.contains_key(listed), "{listed} is missing");
    }
    for internal in ["/inventory_item/{key}/reserve", "/order/{key}/give_up"] {
        assert!(!paths.contains_key(internal), "{internal} is listed");
    }
    let place = &paths["/order/{key}/place"]["post"];
    assert!(
        place["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Places the order")),
        "the doc comment is the description: {place}"
    );
    assert!(place["responses"]["422"].is_object(), "its error is a 422");

    // Every schema in every operation compiles, its references resolving in the document.
    let mut operations = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let at = format!("/paths/{}/{method}", escape(path));
            if op["requestBody"].is_object() {
                validator_at(
                    &document,
                    &format!("{at}/requestBody/content/application~1json/schema"),
                );
            }
            for (code, answer) in op["responses"].as_object().unwrap() {
                if let Some(content) = answer["content"].as_object() {
                    for media in content.keys() {
                        validator_at(
                            &document,
                            &format!("{at}/responses/{code}/content/{}/schema", escape(media)),
                        );
                    }
                }
            }
            operations.push((path.clone(), method.clone()));
        }
    }
    assert!(operations.len() > 30, "{operations:?}");

    // The README's example is a valid body, and what it answers is the documented result.
    let body = readme_place_body();
    let place_body = validator_at(
        &document,
        "/paths/~1order~1%7Bkey%7D~1place/post/requestBody/content/application~1json/schema",
    );
    assert!(
        place_body.is_valid(&body),
        "README body {body} is not valid"
    );
    assert!(
        !place_body.is_valid(&json!({"customer": "c-1"})),
        "a body without lines must not be valid"
    );
    let answer = client
        .post(format!("{base}/order/o-web-1/place"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    let place_result = validator_at(
        &document,
        "/paths/~1order~1%7Bkey%7D~1place/post/responses/200/content/application~1json/schema",
    );
    assert!(
        place_result.is_valid(&answer),
        "answer {answer} is not valid"
    );

    // Every route it lists answers: with an empty object where a body is taken, a made-up
    // key or dead letter id. Whatever the handler thinks of it, the route exists.
    for (path, method) in &operations {
        let url = format!(
            "{base}{}",
            path.replace("{key}", "o-openapi")
                .replace("{id}", "send-1-1")
        );
        let request = match method.as_str() {
            "get" => client.get(&url),
            "post" => client.post(&url).json(&json!({})),
            "delete" => client.delete(&url),
            other => panic!("unexpected method {other} on {path}"),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let is_stream = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let error = if is_stream {
            Value::Null
        } else {
            response.json::<Value>().await.unwrap_or(Value::Null)
        };
        assert!(
            status < 500 && status != 405 && error["error"] != "not_found",
            "{method} {path}: {status} {error}"
        );
    }

    live.stop().await.unwrap();
    rt.shutdown().await.unwrap();
}
