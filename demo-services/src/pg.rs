//! PostgreSQL for the shop's services: a connection made lazily (at the
//! first request, again after it broke), the service's database made when
//! missing, its schema brought up to date by the migrations in
//! `demo-services/migrations/<service>/`.
//!
//! A store that is down must not hang the shop: connecting gives up after
//! [`CONNECT_TIMEOUT`], every query after [`QUERY_TIMEOUT`], and for
//! [`RETRY_AFTER`] after a failed connect the next requests get that
//! failure at once instead of queueing behind new attempts. A broken or
//! timed-out connection is dropped, so the store coming back is noticed
//! by the next request without a restart.

pub mod migrate;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::upstream::Target;
use migrate::Migration;

/// How long making a connection (TCP and PostgreSQL's startup) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one query may take, checked by the server
/// (`statement_timeout`) and, for a server that stopped answering, here.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed connect, how long requests get that failure without
/// trying again.
pub const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Why the database could not be used; the text follows "<service>'s
/// database is unavailable: ".
#[derive(Clone, Debug, thiserror::Error)]
pub enum DbError {
    #[error("no connection to {target} within {CONNECT_TIMEOUT:?}")]
    ConnectTimeout { target: String },
    #[error("{target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("no answer within {QUERY_TIMEOUT:?}")]
    QueryTimeout,
    #[error("{0}")]
    Query(String),
    #[error("migration {name}: {reason}")]
    Migration { name: String, reason: String },
}

/// A tokio-postgres error with the server's own message, which its
/// `Display` leaves out ("db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::Query(describe(&e))
    }
}

/// How to reach one service's database.
#[derive(Debug)]
pub struct Connector {
    target: Target,
    user: String,
    database: &'static str,
    migrations: &'static [Migration],
    /// Set once the migrations ran in this process; each later connection
    /// finds the schema as it is.
    migrated: AtomicBool,
}

impl Connector {
    pub fn new(
        target: Target,
        user: String,
        database: &'static str,
        migrations: &'static [Migration],
    ) -> Self {
        Connector {
            target,
            user,
            database,
            migrations,
            migrated: AtomicBool::new(false),
        }
    }

    pub fn database(&self) -> &'static str {
        self.database
    }

    fn config(&self, database: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        match &self.target {
            Target::Addr(addr) => config.host(addr.ip().to_string()).port(addr.port()),
            // Looked up by tokio-postgres at each connect.
            Target::Host { host, port } => config.host(host).port(*port),
        };
        config
            .user(&self.user)
            .dbname(database)
            .application_name(self.database)
            .connect_timeout(CONNECT_TIMEOUT)
            .options(format!(
                "-c statement_timeout={}",
                QUERY_TIMEOUT.as_millis()
            ));
        config
    }

    async fn open(&self, database: &str) -> Result<Client, ConnectFailure> {
        let target = self.target.to_string();
        let config = self.config(database);
        let (client, connection) =
            match tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls)).await {
                Err(_) => return Err(ConnectFailure::Other(DbError::ConnectTimeout { target })),
                Ok(Err(e)) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
                    return Err(ConnectFailure::NoDatabase)
                }
                Ok(Err(e)) => {
                    return Err(ConnectFailure::Other(DbError::Connect {
                        target,
                        reason: describe(&e),
                    }))
                }
                Ok(Ok(pair)) => pair,
            };
        let name = self.database;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(database = name, error = %describe(&e), "connection ended");
            }
        });
        Ok(client)
    }

    /// A new connection to the service's database, made (and migrated) if
    /// it is not there yet.
    pub async fn connect(&self) -> Result<Client, DbError> {
        let mut client = match self.open(self.database).await {
            Ok(client) => client,
            Err(ConnectFailure::Other(e)) => return Err(e),
            Err(ConnectFailure::NoDatabase) => {
                self.create_database().await?;
                self.open(self.database)
                    .await
                    .map_err(ConnectFailure::into_error)?
            }
        };
        if !self.migrated.load(Ordering::Acquire) {
            migrate::apply(&mut client, self.migrations).await?;
            self.migrated.store(true, Ordering::Release);
        }
        Ok(client)
    }

    async fn create_database(&self) -> Result<(), DbError> {
        let admin = self
            .open("postgres")
            .await
            .map_err(ConnectFailure::into_error)?;
        // The name is one of the service names, never input.
        let sql = format!("CREATE DATABASE \"{}\"", self.database);
        match timed(admin.batch_execute(&sql)).await {
            Ok(()) => {
                tracing::info!(database = self.database, "created the database");
                Ok(())
            }
            // A replica starting at the same time made it first.
            Err(DbError::Query(_)) if self.exists(&admin).await => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn exists(&self, admin: &Client) -> bool {
        let name = self.database;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&name];
        let query = admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &params);
        matches!(timed(query).await, Ok(Some(_)))
    }
}

enum ConnectFailure {
    NoDatabase,
    Other(DbError),
}

impl ConnectFailure {
    fn into_error(self) -> DbError {
        match self {
            ConnectFailure::NoDatabase => DbError::Query("the database does not exist".into()),
            ConnectFailure::Other(e) => e,
        }
    }
}

/// `query` within [`QUERY_TIMEOUT`].
pub async fn timed<T>(
    query: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(QUERY_TIMEOUT, query).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(DbError::QueryTimeout),
    }
}

/// One connection shared by a service's requests (tokio-postgres
/// pipelines their queries); each request's work is one statement, so no
/// transaction spans requests.
#[derive(Debug)]
pub struct Shared {
    connector: Arc<Connector>,
    state: tokio::sync::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    client: Option<Arc<Client>>,
    failed: Option<(Instant, DbError)>,
}

impl Shared {
    pub fn new(connector: Arc<Connector>) -> Self {
        Shared {
            connector,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    pub fn connector(&self) -> &Arc<Connector> {
        &self.connector
    }

    async fn client(&self) -> Result<Arc<Client>, DbError> {
        let mut state = self.state.lock().await;
        if let Some(client) = &state.client {
            if !client.is_closed() {
                return Ok(client.clone());
            }
        }
        state.client = None;
        if let Some((at, e)) = &state.failed {
            if at.elapsed() < RETRY_AFTER {
                return Err(e.clone());
            }
        }
        match self.connector.connect().await {
            Ok(client) => {
                if state.failed.take().is_some() {
                    tracing::info!(
                        database = self.connector.database,
                        "database reachable again"
                    );
                }
                let client = Arc::new(client);
                state.client = Some(client.clone());
                Ok(client)
            }
            Err(e) => {
                if state.failed.is_none() {
                    tracing::warn!(database = self.connector.database, error = %e, "database unavailable");
                }
                state.failed = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Runs `work` on the shared connection within [`QUERY_TIMEOUT`]; a
    /// connection that broke or stopped answering is dropped.
    pub async fn run<T, F>(&self, work: impl FnOnce(Arc<Client>) -> F) -> Result<T, DbError>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client = self.client().await?;
        let result = timed(work(client.clone())).await;
        if result.is_err() && (client.is_closed() || matches!(result, Err(DbError::QueryTimeout))) {
            let mut state = self.state.lock().await;
            if state
                .client
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &client))
            {
                state.client = None;
            }
        }
        result
    }
}

/// A connection of its own, for a background task that needs
/// transactions (an event consumer, the outbox publisher).
#[derive(Debug)]
pub struct Dedicated {
    connector: Arc<Connector>,
    client: Option<Client>,
}

impl Dedicated {
    pub fn new(connector: Arc<Connector>) -> Self {
        Dedicated {
            connector,
            client: None,
        }
    }

    /// The connection, made now if there is none or it broke.
    pub async fn client(&mut self) -> Result<&mut Client, DbError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            self.client = Some(self.connector.connect().await?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| DbError::Query("no connection".into()))
    }

    /// Drops the connection after a failure that may have left it unusable.
    pub fn reset(&mut self) {
        self.client = None;
    }
}
