//! A fresh Postgres schema per test, from `KEYSERVER_TEST_DATABASE_URL`; dropped after.

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};

/// A schema that is dropped when this is dropped.
pub(crate) struct TestSchema {
    url: String,
    name: String,
}

impl TestSchema {
    /// Connect options whose `search_path` is this schema.
    pub(crate) fn options(&self) -> PgConnectOptions {
        let opts: PgConnectOptions = self.url.parse().unwrap();
        opts.options([("search_path", self.name.as_str())])
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop runs outside any runtime guarantee: use a small one of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = PgConnection::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A fresh schema, or `None` (after saying so loudly) when no test database is configured.
pub(crate) async fn fresh_schema() -> Option<TestSchema> {
    let Ok(url) = std::env::var("KEYSERVER_TEST_DATABASE_URL") else {
        // Straight to stderr, past the test harness's capture: a skip must be seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: Postgres storage contract test: KEYSERVER_TEST_DATABASE_URL is not set"
        );
        return None;
    };
    let name = format!("ks_test_{:016x}", rand::random::<u64>());
    let mut c = PgConnection::connect(&url)
        .await
        .expect("KEYSERVER_TEST_DATABASE_URL is set but Postgres is unreachable");
    sqlx::query(&format!("CREATE SCHEMA {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    Some(TestSchema { url, name })
}
