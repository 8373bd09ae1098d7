//! The posts service: what people wrote, in the service's own SQLite database. It asks users,
//! over HTTP, whether an author exists; it never opens the users database.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use msctl_kit::params::{Paging, parse_id};
use msctl_kit::pool::{self, Pool};
use msctl_kit::read_cache::ReadCache;
use msctl_kit::server::{json_answer, json_bytes};
use msctl_kit::{ApiError, PeerRequest, Peers};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Seeded posts: 3 for each of the 10 seeded users, ids 1..=30.
pub const SEED_POSTS: i64 = 30;

/// A page asked for: the user filter, the limit and the offset.
type PageKey = (Option<i64>, i64, i64);

/// How many bytes of `GET /posts` pages each request thread keeps.
const PAGES_KEPT: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    pub id: i64,
    pub user_id: i64,
    pub title: String,
    pub body: String,
}

/// One page of posts, with how many there are in all.
#[derive(Debug, Serialize)]
pub struct Page {
    pub posts: Vec<Post>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPost {
    pub user_id: i64,
    pub title: String,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct Posts {
    db: Arc<Pool<Connection>>,
    /// `GET /posts` pages as sent, kept until the next commit.
    pages: Arc<ReadCache<PageKey, Bytes>>,
    peers: Peers,
}

impl Posts {
    /// Opens (creating and seeding on first start) the database at `path`. Replicas starting
    /// together race for the lock that turns on WAL and seeds, and SQLite does not always wait
    /// for it (a change of journal mode fails at once), so the opening is tried again.
    pub fn open(path: &std::path::Path, peers: Peers) -> rusqlite::Result<Self> {
        let mut tries = 0;
        loop {
            match Self::open_once(path, peers.clone()) {
                Err(e) if is_busy(&e) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &std::path::Path, peers: Peers) -> rusqlite::Result<Self> {
        // Every connection is opened before any is set up: the set-up (WAL, schema, seed) is
        // a property of the file, which the others see on their next transaction.
        let pool = Pool::open(pool::default_size(), || connect(path))?;
        let mut held = pool.get();
        let conn = &mut *held;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS posts (
                 id INTEGER PRIMARY KEY,
                 user_id INTEGER NOT NULL,
                 title TEXT NOT NULL,
                 body TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS posts_by_user ON posts (user_id);
             CREATE TABLE IF NOT EXISTS seeded (done INTEGER NOT NULL);
             -- One row each time the posts of a deleted user are removed: a record of what
             -- the service did about each event, which shows an event applied twice.
             CREATE TABLE IF NOT EXISTS clean_ups (
                 id INTEGER PRIMARY KEY,
                 event_id TEXT NOT NULL,
                 user_id INTEGER NOT NULL,
                 posts_removed INTEGER NOT NULL,
                 at_ns INTEGER NOT NULL
             );",
        )?;
        msctl_kit::bus::setup(conn)?;
        // Checked and seeded under one write lock, so that of several replicas starting at
        // once exactly one seeds.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let seeded: bool = tx.query_row("SELECT EXISTS(SELECT 1 FROM seeded)", [], |r| r.get(0))?;
        if !seeded {
            for id in 1..=SEED_POSTS {
                let user_id = (id - 1) / 3 + 1;
                let n = (id - 1) % 3 + 1;
                tx.execute(
                    "INSERT INTO posts (id, user_id, title, body) VALUES (?1, ?2, ?3, ?4)",
                    params![
                        id,
                        user_id,
                        format!("Post {n} by user {user_id}"),
                        format!("This is post number {n} of user {user_id}.")
                    ],
                )?;
            }
            tx.execute("INSERT INTO seeded (done) VALUES (1)", [])?;
        }
        tx.commit()?;
        drop(held);
        Ok(Self {
            db: Arc::new(pool),
            pages: Arc::new(ReadCache::open(path, PAGES_KEPT)),
            peers,
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.get()
    }

    /// Applies a `user.deleted` event: that user's posts are removed, once however often the
    /// event comes (the event id is recorded in the same transaction).
    pub fn on_user_deleted(&self, event: &msctl_kit::bus::Delivered) -> Result<(), String> {
        let user_id = event.data["id"]
            .as_i64()
            .ok_or_else(|| format!("event {} names no user id", event.id))?;
        let _query = msctl_kit::db_span("DELETE", "posts").entered();
        let mut db = self.db();
        let tx = db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        if !msctl_kit::bus::first_delivery(&tx, event).map_err(|e| e.to_string())? {
            tracing::info!(event_id = %event.id, "event delivered again; applied before");
            return Ok(());
        }
        let removed = tx
            .execute("DELETE FROM posts WHERE user_id = ?1", [user_id])
            .map_err(|e| e.to_string())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64;
        tx.execute(
            "INSERT INTO clean_ups (event_id, user_id, posts_removed, at_ns) VALUES (?1, ?2, ?3, ?4)",
            params![event.id, user_id, removed as i64, now],
        )
        .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        tracing::info!(user_id, removed, "posts of a deleted user removed");
        Ok(())
    }
}

/// One connection to the database at `path`. Replicas share the file and open it at the same
/// moment: each waits for the others' locks rather than failing.
fn connect(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    Ok(conn)
}

pub fn app(state: Posts) -> Router {
    Router::new()
        .route("/posts", get(list).post(create))
        .route("/posts/{id}", get(show).delete(remove))
        .with_state(state)
}

fn db_error(e: rusqlite::Error) -> ApiError {
    ApiError::internal(format!("database error: {e}"))
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Post> {
    Ok(Post {
        id: r.get(0)?,
        user_id: r.get(1)?,
        title: r.get(2)?,
        body: r.get(3)?,
    })
}

async fn list(
    State(posts): State<Posts>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let page = Paging::from_query(&query)?;
    let user_id = query
        .get("user_id")
        .map(|raw| parse_id(raw, "user_id"))
        .transpose()?;
    // Read from the database only when something was committed since this page was last read.
    let json = posts
        .pages
        .get_or_load((user_id, page.limit, page.offset), || {
            json_bytes(&read_page(&posts, user_id, page)?)
        })?;
    Ok(json_answer(json))
}

fn read_page(posts: &Posts, user_id: Option<i64>, page: Paging) -> Result<Page, ApiError> {
    let db = posts.db();
    let _query = msctl_kit::db_span("SELECT", "posts").entered();
    // `+?1`, not `?1`: compared bare with the indexed column of a query that is also ordered,
    // a bound value makes SQLite compile the statement afresh at every run (a sixth of this
    // service's time under load). The index is used all the same.
    let filter = if user_id.is_some() {
        "WHERE user_id = +?1"
    } else {
        ""
    };
    let args = rusqlite::params_from_iter(user_id);
    // The count rides on every row of the page: one statement, so one snapshot and one round
    // of WAL locking, with no BEGIN and COMMIT to compile at each request. SQLite counts once.
    let mut total = None;
    let rows = db
        .prepare_cached(&format!(
            "SELECT (SELECT COUNT(*) FROM posts {filter}), id, user_id, title, body
             FROM posts {filter} ORDER BY id {}",
            page.sql()
        ))
        .and_then(|mut stmt| {
            stmt.query_map(args.clone(), |r| {
                total = Some(r.get::<_, i64>(0)?);
                Ok(Post {
                    id: r.get(1)?,
                    user_id: r.get(2)?,
                    title: r.get(3)?,
                    body: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(db_error)?;
    // A page past the end has no row to carry the count.
    let total = match total {
        Some(total) => total,
        None => db
            .prepare_cached(&format!("SELECT COUNT(*) FROM posts {filter}"))
            .and_then(|mut stmt| stmt.query_row(args, |r| r.get(0)))
            .map_err(db_error)?,
    };
    Ok(Page {
        posts: rows,
        total,
        limit: page.limit,
        offset: page.offset,
    })
}

async fn show(State(posts): State<Posts>, Path(id): Path<String>) -> Result<Json<Post>, ApiError> {
    let id = parse_id(&id, "post id")?;
    let _query = msctl_kit::db_span("SELECT", "posts").entered();
    let post = posts
        .db()
        .prepare_cached("SELECT id, user_id, title, body FROM posts WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([id], row).optional())
        .map_err(db_error)?;
    post.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("post {id} does not exist")))
}

/// Asks the users service whether `user_id` exists.
async fn check_author(posts: &Posts, user_id: i64) -> Result<(), ApiError> {
    let unavailable = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("cannot check the author: {why}; try again once users is up"),
        )
    };
    let answer = posts
        .peers
        .send(PeerRequest::get(
            "users",
            format!("/users/{user_id}"),
            "/users/{id}",
        ))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    match answer.status {
        s if s.is_success() => Ok(()),
        StatusCode::NOT_FOUND => Err(ApiError::unprocessable(format!(
            "user {user_id} does not exist"
        ))),
        s => Err(unavailable(format!("users answered {s}"))),
    }
}

async fn create(
    State(posts): State<Posts>,
    Json(new): Json<NewPost>,
) -> Result<Response, ApiError> {
    if new.user_id <= 0 {
        return Err(ApiError::unprocessable(
            "user_id must be a positive whole number",
        ));
    }
    let title = new.title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(ApiError::unprocessable("title must be 1 to 200 characters"));
    }
    if new.body.chars().count() > 10_000 {
        return Err(ApiError::unprocessable(
            "body must be at most 10000 characters",
        ));
    }
    check_author(&posts, new.user_id).await?;
    let db = posts.db();
    let query = msctl_kit::db_span("INSERT", "posts").entered();
    db.execute(
        "INSERT INTO posts (user_id, title, body) VALUES (?1, ?2, ?3)",
        params![new.user_id, title, new.body],
    )
    .map_err(db_error)?;
    let post = Post {
        id: db.last_insert_rowid(),
        user_id: new.user_id,
        title: title.to_string(),
        body: new.body,
    };
    drop(query);
    tracing::info!(post_id = post.id, user_id = post.user_id, "post created");
    let location = format!("/posts/{}", post.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(post),
    )
        .into_response())
}

async fn remove(
    State(posts): State<Posts>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id, "post id")?;
    let _query = msctl_kit::db_span("DELETE", "posts").entered();
    let deleted = posts
        .db()
        .execute("DELETE FROM posts WHERE id = ?1", [id])
        .map_err(db_error)?;
    if deleted == 0 {
        return Err(ApiError::not_found(format!("post {id} does not exist")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Whether SQLite refused for a lock another connection holds.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
