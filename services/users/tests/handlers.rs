//! In-process tests of the users handlers, through the kit's layers as served.

use msctl_kit::testing::{call, get, json_request, kit};
use serde_json::json;

fn service() -> (tempfile::TempDir, axum::Router) {
    let dir = tempfile::tempdir().unwrap();
    let users = users::Users::open(&dir.path().join("users.db")).unwrap();
    (dir, users::app(users))
}

#[tokio::test]
async fn seeds_ten_users_with_stable_ids() {
    let (_dir, app) = service();
    let k = kit("users", &[]);
    let (status, _, body) = call(&k, app.clone(), get("/users?limit=100")).await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 10);
    assert_eq!(
        body["users"][0],
        json!({"id": 1, "name": "Ada Lovelace", "email": "ada@example.com"})
    );
    let (status, _, body) = call(&k, app.clone(), get("/users?limit=3&offset=8")).await;
    assert_eq!(status, 200);
    let ids: Vec<i64> = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![9, 10]);
    let (status, _, body) = call(&k, app, get("/users/3")).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "Grace Hopper");
}

#[tokio::test]
async fn create_then_read_then_delete() {
    let (_dir, app) = service();
    let k = kit("users", &[]);
    let (status, headers, body) = call(
        &k,
        app.clone(),
        json_request(
            "POST",
            "/users",
            r#"{"name": "Linus", "email": "linus@example.org"}"#,
        ),
    )
    .await;
    assert_eq!(status, 201);
    let id = body["id"].as_i64().unwrap();
    assert_eq!(headers["location"], format!("/users/{id}").as_str());
    let (status, _, body) = call(&k, app.clone(), get(&format!("/users/{id}"))).await;
    assert_eq!(
        (status.as_u16(), body["email"].as_str()),
        (200, Some("linus@example.org"))
    );
    let (status, _, _) = call(
        &k,
        app.clone(),
        json_request(
            "POST",
            "/users",
            r#"{"name": "L", "email": "linus@example.org"}"#,
        ),
    )
    .await;
    assert_eq!(status, 409, "emails are unique");
    let (status, _, body) = call(
        &k,
        app.clone(),
        json_request("DELETE", &format!("/users/{id}"), ""),
    )
    .await;
    assert_eq!((status.as_u16(), body), (204, serde_json::Value::Null));
    let (status, _, _) = call(&k, app, get(&format!("/users/{id}"))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn data_survives_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.db");
    let k = kit("users", &[]);
    let app = users::app(users::Users::open(&path).unwrap());
    let (status, _, _) = call(
        &k,
        app,
        json_request(
            "POST",
            "/users",
            r#"{"name": "Kept", "email": "kept@example.com"}"#,
        ),
    )
    .await;
    assert_eq!(status, 201);
    let app = users::app(users::Users::open(&path).unwrap());
    let (_, _, body) = call(&k, app, get("/users?limit=100")).await;
    assert_eq!(
        body["total"], 11,
        "reopening neither loses the new user nor seeds twice"
    );
}

#[tokio::test]
async fn every_bad_input_gets_a_json_error_and_writes_nothing() {
    let (_dir, app) = service();
    let k = kit("users", &[]);
    let big = format!(
        r#"{{"name": "{}", "email": "big@example.com"}}"#,
        "x".repeat(70 * 1024)
    );
    let cases: Vec<(axum::http::Request<axum::body::Body>, u16, &str)> = vec![
        (get("/users/abc"), 400, "bad_request"),
        (get("/users/0"), 400, "bad_request"),
        (get("/users/-4"), 400, "bad_request"),
        (get("/users/99999999999999999999"), 400, "bad_request"),
        (get("/users/999"), 404, "not_found"),
        (get("/users?limit=-1"), 400, "bad_request"),
        (
            get("/users?limit=100000000000000000000"),
            400,
            "bad_request",
        ),
        (get("/users?offset=-5"), 400, "bad_request"),
        (
            json_request("POST", "/users", "{not json"),
            400,
            "bad_request",
        ),
        (
            json_request("POST", "/users", r#"{"name": "x"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            json_request("POST", "/users", r#"{"name": 5, "email": "a@b.c"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            json_request("POST", "/users", r#"{"name": "", "email": "a@b.c"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            json_request("POST", "/users", r#"{"name": "x", "email": "nope"}"#),
            422,
            "unprocessable_entity",
        ),
        (
            json_request("POST", "/users", &big),
            413,
            "payload_too_large",
        ),
        (
            json_request("PUT", "/users/1", "{}"),
            405,
            "method_not_allowed",
        ),
        (get("/people"), 404, "not_found"),
    ];
    for (req, want_status, want_code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (status, _, body) = call(&k, app.clone(), req).await;
        assert_eq!(status.as_u16(), want_status, "{what}: {body}");
        assert_eq!(body["error"]["code"], want_code, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
    let (_, _, body) = call(&k, app, get("/users?limit=100")).await;
    assert_eq!(body["total"], 10, "no bad request wrote anything");
}
