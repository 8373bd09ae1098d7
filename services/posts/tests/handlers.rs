//! In-process tests of the posts handlers; users is a real in-process server on loopback.

use msctl_kit::testing::{call, dead_url, get, json_request, kit, spawn};

async fn users_url() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let users = users_service(&dir).await;
    (dir, users)
}

async fn users_service(dir: &tempfile::TempDir) -> String {
    // users is a dev-dependency only here; posts itself talks to it over HTTP.
    let state = users::Users::open(&dir.path().join("users.db")).unwrap();
    spawn(&kit("users", &[]), users::app(state)).await
}

fn posts_app(dir: &tempfile::TempDir, k: &msctl_kit::Kit) -> axum::Router {
    posts::app(posts::Posts::open(&dir.path().join("posts.db"), k.peers.clone()).unwrap())
}

#[tokio::test]
async fn seeds_thirty_posts_across_the_users() {
    let dir = tempfile::tempdir().unwrap();
    let k = kit("posts", &[]);
    let app = posts_app(&dir, &k);
    let (status, _, body) = call(&k, app.clone(), get("/posts?limit=100")).await;
    assert_eq!((status.as_u16(), body["total"].as_i64()), (200, Some(30)));
    let (_, _, body) = call(&k, app.clone(), get("/posts?user_id=4")).await;
    let posts = body["posts"].as_array().unwrap();
    assert_eq!(posts.len(), 3);
    assert!(posts.iter().all(|p| p["user_id"] == 4));
    let (status, _, body) = call(&k, app.clone(), get("/posts/30")).await;
    assert_eq!((status.as_u16(), body["user_id"].as_i64()), (200, Some(10)));
    // A page counts all of the user's posts, and so does a page past the end, which has none.
    for (query, len) in [("user_id=4&limit=2", 2), ("user_id=4&offset=10", 0)] {
        let (_, _, body) = call(&k, app.clone(), get(&format!("/posts?{query}"))).await;
        assert_eq!(body["posts"].as_array().unwrap().len(), len, "{query}");
        assert_eq!(body["total"], 3, "{query}");
    }
    let (_, _, body) = call(&k, app, get("/posts?user_id=99")).await;
    assert_eq!(
        (
            body["total"].as_i64(),
            body["posts"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn a_post_needs_an_existing_author() {
    let (_users_dir, users) = users_url().await;
    let dir = tempfile::tempdir().unwrap();
    let k = kit("posts", &[("USERS_URL", users)]);
    let app = posts_app(&dir, &k);
    let (status, headers, body) = call(
        &k,
        app.clone(),
        json_request(
            "POST",
            "/posts",
            r#"{"user_id": 2, "title": "Hello", "body": "World"}"#,
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        headers["location"],
        format!("/posts/{}", body["id"]).as_str()
    );
    let (status, _, body) = call(
        &k,
        app.clone(),
        json_request(
            "POST",
            "/posts",
            r#"{"user_id": 77, "title": "Hello", "body": "World"}"#,
        ),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["message"], "user 77 does not exist");
    let (_, _, body) = call(&k, app, get("/posts?user_id=2")).await;
    assert_eq!(
        body["total"], 4,
        "one new post, none for the missing author"
    );
}

#[tokio::test]
async fn users_out_of_reach_is_a_clear_503() {
    for vars in [vec![("USERS_URL", dead_url())], vec![]] {
        let dir = tempfile::tempdir().unwrap();
        let k = kit("posts", &vars);
        let app = posts_app(&dir, &k);
        let (status, _, body) = call(
            &k,
            app.clone(),
            json_request(
                "POST",
                "/posts",
                r#"{"user_id": 1, "title": "t", "body": "b"}"#,
            ),
        )
        .await;
        assert_eq!(status, 503, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("users"), "{message}");
        let (_, _, body) = call(&k, app, get("/posts?limit=100")).await;
        assert_eq!(body["total"], 30, "nothing was written");
    }
}

#[tokio::test]
async fn every_bad_input_gets_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let k = kit("posts", &[]);
    let app = posts_app(&dir, &k);
    let cases = [
        (get("/posts/x"), 400),
        (get("/posts/0"), 400),
        (get("/posts/12345"), 404),
        (get("/posts?user_id=abc"), 400),
        (get("/posts?limit=0"), 400),
        (get("/posts?offset=99999999999999999999"), 400),
        (json_request("POST", "/posts", "{\"user_id\": 1,,"), 400),
        (
            json_request("POST", "/posts", r#"{"user_id": 1, "title": "t"}"#),
            422,
        ),
        (
            json_request(
                "POST",
                "/posts",
                r#"{"user_id": "one", "title": "t", "body": "b"}"#,
            ),
            422,
        ),
        (
            json_request(
                "POST",
                "/posts",
                r#"{"user_id": -1, "title": "t", "body": "b"}"#,
            ),
            422,
        ),
        (
            json_request(
                "POST",
                "/posts",
                r#"{"user_id": 1, "title": " ", "body": "b"}"#,
            ),
            422,
        ),
        (
            json_request(
                "POST",
                "/posts",
                &format!(
                    r#"{{"user_id": 1, "title": "t", "body": "{}"}}"#,
                    "b".repeat(65 * 1024)
                ),
            ),
            413,
        ),
        (json_request("PATCH", "/posts/1", "{}"), 405),
        (json_request("DELETE", "/posts/999", ""), 404),
    ];
    for (req, want) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (status, _, body) = call(&k, app.clone(), req).await;
        assert_eq!(status.as_u16(), want, "{what}: {body}");
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{what}: {body}"
        );
    }
}
