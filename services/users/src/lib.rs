//! The users service: people, in the service's own SQLite database.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use msctl_kit::ApiError;
use msctl_kit::params::{Paging, parse_id};
use msctl_kit::pool::{self, Pool};
use msctl_kit::read_cache::ReadCache;
use msctl_kit::server::{json_answer, json_bytes};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// The seeded people: stable ids 1..=10, so examples and tests can name them.
const SEED: [(&str, &str); 10] = [
    ("Ada Lovelace", "ada@example.com"),
    ("Alan Turing", "alan@example.com"),
    ("Grace Hopper", "grace@example.com"),
    ("Edsger Dijkstra", "edsger@example.com"),
    ("Barbara Liskov", "barbara@example.com"),
    ("Donald Knuth", "donald@example.com"),
    ("Margaret Hamilton", "margaret@example.com"),
    ("Ken Thompson", "ken@example.com"),
    ("Frances Allen", "frances@example.com"),
    ("John McCarthy", "john@example.com"),
];

/// How many bytes of `GET /users/{id}` answers each request thread keeps (some 6,000 users).
const ANSWERS_KEPT: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub email: String,
}

/// The service's state: its database, and nothing of anyone else's; and the relay that sends
/// the events its outbox holds.
#[derive(Debug, Clone)]
pub struct Users {
    db: Arc<Pool<Connection>>,
    /// `GET /users/{id}` answers as sent (`None`: no such user), kept until the next commit.
    answers: Arc<ReadCache<i64, Option<Bytes>>>,
    outbox: Option<msctl_kit::bus::Outbox>,
}

impl Users {
    /// Opens (creating and seeding on first start) the database at `path`. Replicas starting
    /// together race for the lock that turns on WAL and seeds, and SQLite does not always wait
    /// for it (a change of journal mode fails at once), so the opening is tried again.
    pub fn open(path: &std::path::Path) -> rusqlite::Result<Self> {
        let mut tries = 0;
        loop {
            match Self::open_once(path) {
                Err(e) if is_busy(&e) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &std::path::Path) -> rusqlite::Result<Self> {
        // Every connection is opened before any is set up: the set-up (WAL, schema, seed) is
        // a property of the file, which the others see on their next transaction.
        let pool = Pool::open(pool::default_size(), || connect(path))?;
        let mut held = pool.get();
        let conn = &mut *held;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS users (
                 id INTEGER PRIMARY KEY,
                 name TEXT NOT NULL,
                 email TEXT NOT NULL UNIQUE
             );
             CREATE TABLE IF NOT EXISTS seeded (done INTEGER NOT NULL);",
        )?;
        msctl_kit::bus::setup(conn)?;
        // Checked and seeded under one write lock, so that of several replicas starting at
        // once exactly one seeds.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let seeded: bool = tx.query_row("SELECT EXISTS(SELECT 1 FROM seeded)", [], |r| r.get(0))?;
        if !seeded {
            for (i, (name, email)) in SEED.iter().enumerate() {
                tx.execute(
                    "INSERT INTO users (id, name, email) VALUES (?1, ?2, ?3)",
                    params![i as i64 + 1, name, email],
                )?;
            }
            tx.execute("INSERT INTO seeded (done) VALUES (1)", [])?;
        }
        tx.commit()?;
        let answers = ReadCache::open(path, ANSWERS_KEPT);
        drop(held);
        Ok(Self {
            db: Arc::new(pool),
            answers: Arc::new(answers),
            outbox: None,
        })
    }

    /// Relays the events this service publishes (`user.created`, `user.deleted`) to the broker
    /// that `discovery` finds, whenever it is up.
    pub fn relay_events(mut self, discovery: msctl_kit::Discovery) -> Self {
        self.outbox = Some(msctl_kit::bus::Outbox::start(self.db.clone(), discovery));
        self
    }

    fn committed(&self) {
        if let Some(outbox) = &self.outbox {
            outbox.committed();
        }
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.get()
    }
}

/// One connection to the database at `path`. Replicas share the file and open it at the same
/// moment: each waits for the others' locks rather than failing.
fn connect(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    Ok(conn)
}

pub fn app(state: Users) -> Router {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{id}", get(show).delete(remove))
        .with_state(state)
}

fn db_error(e: rusqlite::Error) -> ApiError {
    ApiError::internal(format!("database error: {e}"))
}

async fn list(
    State(users): State<Users>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let page = Paging::from_query(&query)?;
    let db = users.db();
    let _query = msctl_kit::db_span("SELECT", "users").entered();
    let total: i64 = db
        .prepare_cached("SELECT COUNT(*) FROM users")
        .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
        .map_err(db_error)?;
    let mut stmt = db
        .prepare_cached(&format!(
            "SELECT id, name, email FROM users ORDER BY id {}",
            page.sql()
        ))
        .map_err(db_error)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(User {
                id: r.get(0)?,
                name: r.get(1)?,
                email: r.get(2)?,
            })
        })
        .map_err(db_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_error)?;
    Ok(Json(
        serde_json::json!({"users": rows, "total": total, "limit": page.limit, "offset": page.offset}),
    ))
}

async fn show(State(users): State<Users>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id, "user id")?;
    // Read from the database only when something was committed since this answer was last read.
    let answer = users.answers.get_or_load(id, || {
        let _query = msctl_kit::db_span("SELECT", "users").entered();
        let user = users
            .db()
            .prepare_cached("SELECT id, name, email FROM users WHERE id = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([id], |r| {
                    Ok(User {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        email: r.get(2)?,
                    })
                })
                .optional()
            })
            .map_err(db_error)?;
        user.as_ref().map(json_bytes).transpose()
    })?;
    match answer {
        Some(json) => Ok(json_answer(json)),
        None => Err(ApiError::not_found(format!("user {id} does not exist"))),
    }
}

fn validate(new: &NewUser) -> Result<(String, String), ApiError> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::unprocessable("name must be 1 to 100 characters"));
    }
    let email = new.email.trim();
    let well_formed = email.len() <= 254
        && !email.contains(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if !well_formed {
        return Err(ApiError::unprocessable(format!(
            "email {email:?} is not an address like name@example.com"
        )));
    }
    Ok((name.to_string(), email.to_string()))
}

async fn create(
    State(users): State<Users>,
    Json(new): Json<NewUser>,
) -> Result<Response, ApiError> {
    let (name, email) = validate(&new)?;
    let mut db = users.db();
    let query = msctl_kit::db_span("INSERT", "users").entered();
    // The user and the event announcing it commit together, or neither does.
    let tx = db
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db_error)?;
    match tx.execute(
        "INSERT INTO users (name, email) VALUES (?1, ?2)",
        params![name, email],
    ) {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("a user with email {email:?} exists already"),
            ));
        }
        Err(e) => return Err(db_error(e)),
    }
    let user = User {
        id: tx.last_insert_rowid(),
        name,
        email,
    };
    msctl_kit::bus::publish(&tx, "user.created", &serde_json::json!(user)).map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    drop(db);
    users.committed();
    drop(query);
    tracing::info!(user_id = user.id, "user created");
    let location = format!("/users/{}", user.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(user),
    )
        .into_response())
}

async fn remove(
    State(users): State<Users>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id, "user id")?;
    let query = msctl_kit::db_span("DELETE", "users").entered();
    let mut db = users.db();
    // The deletion and the event announcing it commit together, or neither does.
    let tx = db
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db_error)?;
    let deleted = tx
        .execute("DELETE FROM users WHERE id = ?1", [id])
        .map_err(db_error)?;
    if deleted == 0 {
        return Err(ApiError::not_found(format!("user {id} does not exist")));
    }
    msctl_kit::bus::publish(&tx, "user.deleted", &serde_json::json!({ "id": id }))
        .map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    drop(db);
    users.committed();
    drop(query);
    tracing::info!(user_id = id, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Whether SQLite refused for a lock another connection holds.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
