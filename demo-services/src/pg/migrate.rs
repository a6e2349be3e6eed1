//! Schema migrations: the files of `demo-services/migrations/<service>/`,
//! named `NNNN_what.sql`, built into the binary and applied at the first
//! connection in the order of their numbers, each in its own transaction
//! recorded in `schema_migrations`.
//!
//! Replicas starting together take a transaction-scoped advisory lock
//! first, so one applies a migration and the others, waiting on the lock,
//! then find it recorded.

use tokio_postgres::Client;

use super::{timed, DbError};

/// Advisory lock key every service's migrations take (locks are per
/// database, so the services do not wait on one another).
const LOCK_KEY: i64 = 0x6d79_6365_6c00;

/// One migration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The file name, `NNNN_what.sql`.
    pub name: &'static str,
    pub sql: &'static str,
}

/// The migrations of one service, from `migrations/<service>/`.
#[macro_export]
macro_rules! migrations {
    ($service:literal: $($file:literal),+ $(,)?) => {
        &[$($crate::pg::migrate::Migration {
            name: $file,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"), "/migrations/", $service, "/", $file
            )),
        }),+]
    };
}

/// A list of migrations that cannot be applied as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{0:?} is not named NNNN_what.sql")]
    Name(&'static str),
    #[error("{later:?} does not come after {earlier:?} (numbers must increase)")]
    Order {
        earlier: &'static str,
        later: &'static str,
    },
}

/// The number a migration's file name starts with.
pub fn version(name: &str) -> Option<i64> {
    let (number, rest) = name.split_once('_')?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if rest.len() <= ".sql".len() || !rest.ends_with(".sql") {
        return None;
    }
    number.parse().ok()
}

/// The migrations not yet in `applied`, in order, after checking that the
/// list is well formed: names numbered, numbers strictly increasing.
pub fn plan<'a>(
    all: &'a [Migration],
    applied: &[i64],
) -> Result<Vec<(i64, &'a Migration)>, PlanError> {
    let mut last: Option<(i64, &'static str)> = None;
    let mut pending = Vec::new();
    for m in all {
        let v = version(m.name).ok_or(PlanError::Name(m.name))?;
        if let Some((previous, earlier)) = last {
            if v <= previous {
                return Err(PlanError::Order {
                    earlier,
                    later: m.name,
                });
            }
        }
        last = Some((v, m.name));
        if !applied.contains(&v) {
            pending.push((v, m));
        }
    }
    Ok(pending)
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// Applies what `client`'s database lacks.
pub async fn apply(client: &mut Client, all: &[Migration]) -> Result<(), DbError> {
    let failed = |name: &str| {
        let name = name.to_string();
        move |e: DbError| DbError::Migration {
            name,
            reason: e.to_string(),
        }
    };
    // The order is checked before touching the database.
    plan(all, &[]).map_err(|e| DbError::Migration {
        name: "(list)".into(),
        reason: e.to_string(),
    })?;
    for m in all {
        let Some(v) = version(m.name) else { continue };
        let tx = timed(client.transaction()).await.map_err(failed(m.name))?;
        timed(tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY]))
            .await
            .map_err(failed(m.name))?;
        timed(tx.batch_execute(CREATE_TABLE))
            .await
            .map_err(failed(m.name))?;
        let done = timed(tx.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[&v]))
            .await
            .map_err(failed(m.name))?;
        if done.is_some() {
            // Dropping the transaction rolls it back and frees the lock.
            continue;
        }
        timed(tx.batch_execute(m.sql))
            .await
            .map_err(failed(m.name))?;
        timed(tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&v, &m.name],
        ))
        .await
        .map_err(failed(m.name))?;
        timed(tx.commit()).await.map_err(failed(m.name))?;
        tracing::info!(migration = m.name, "applied");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn m(name: &'static str) -> Migration {
        Migration { name, sql: "" }
    }

    #[test]
    fn versions_table() {
        let cases = [
            ("0001_products.sql", Some(1)),
            ("0012_x.sql", Some(12)),
            ("1_a.sql", Some(1)),
            ("0001.sql", None),
            ("0001_.sql", None),
            ("0001_products.txt", None),
            ("x001_products.sql", None),
            ("_products.sql", None),
        ];
        for (name, want) in cases {
            assert_eq!(version(name), want, "{name}");
        }
    }

    #[test]
    fn plan_keeps_order_and_skips_applied() {
        let all = [m("0001_a.sql"), m("0002_b.sql"), m("0010_c.sql")];
        let names = |applied: &[i64]| -> Vec<&str> {
            plan(&all, applied)
                .unwrap()
                .into_iter()
                .map(|(_, m)| m.name)
                .collect()
        };
        assert_eq!(names(&[]), ["0001_a.sql", "0002_b.sql", "0010_c.sql"]);
        assert_eq!(names(&[1]), ["0002_b.sql", "0010_c.sql"]);
        assert_eq!(names(&[1, 2, 10]), Vec::<&str>::new());
        // A version the database has and this binary does not (a newer
        // binary ran before) is left alone.
        assert_eq!(names(&[1, 2, 10, 11]), Vec::<&str>::new());
    }

    #[test]
    fn plan_refuses_bad_lists() {
        let cases: [(&[Migration], PlanError); 3] = [
            (
                &[m("0002_b.sql"), m("0001_a.sql")],
                PlanError::Order {
                    earlier: "0002_b.sql",
                    later: "0001_a.sql",
                },
            ),
            (
                &[m("0001_a.sql"), m("0001_b.sql")],
                PlanError::Order {
                    earlier: "0001_a.sql",
                    later: "0001_b.sql",
                },
            ),
            (&[m("a.sql")], PlanError::Name("a.sql")),
        ];
        for (all, want) in cases {
            assert_eq!(plan(all, &[]).unwrap_err(), want);
        }
    }

    #[test]
    fn the_services_migrations_are_well_formed() {
        for all in [crate::catalog::MIGRATIONS, crate::orders::MIGRATIONS] {
            let pending = plan(all, &[]).unwrap();
            assert_eq!(pending.len(), all.len());
            assert!(all.iter().all(|m| !m.sql.trim().is_empty()));
        }
    }
}
