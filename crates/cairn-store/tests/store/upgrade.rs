//! Upgrades: a database as each release left it (`tests/fixtures/upgrade/<schema version>/`)
//! migrates to the current schema on both backends, and everything in it reads back through the
//! store. Each fixture also pins the checksums of the migrations that release shipped: a
//! released migration must never change (a database that applied it would refuse the new one).
//!
//! Add a fixture for every release: the data as that release wrote it, as plain INSERTs per
//! backend, and `checksums-<backend>.txt` (`<version> <sha384 of the file>`).

use std::path::{Path, PathBuf};

use cairn_store::search::SearchFilter;
use cairn_store::{migrate, testing, Backend, ConnectOptions, Db, Id, Store};
use sha2::Digest;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade")
}

fn migrations(backend: Backend) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend.name())
}

/// An empty database, not migrated; `None` when the backend is not configured.
async fn empty(backend: Backend) -> Option<(Db, Option<tempfile::TempDir>)> {
    let (url, dir) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (
                format!("sqlite://{}", dir.path().join("old.db").display()),
                Some(dir),
            )
        }
        Backend::Postgres => {
            let Some(admin) = testing::postgres_admin_url() else {
                assert!(std::env::var_os("CAIRN_TEST_REQUIRE_POSTGRES").is_none());
                return None;
            };
            (
                testing::create_postgres_database(&admin).await.unwrap(),
                None,
            )
        }
    };
    Some((Db::connect(&ConnectOptions::new(url)).await.unwrap(), dir))
}

/// Migration files of `backend` up to `version`, each checked against the release's checksums.
fn released_migrations(backend: Backend, fixture: &Path, version: i64) -> tempfile::TempDir {
    let pinned =
        std::fs::read_to_string(fixture.join(format!("checksums-{}.txt", backend.name()))).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut copied = 0;
    for line in pinned.lines().filter(|l| !l.trim().is_empty()) {
        let (v, sum) = line.split_once(' ').unwrap();
        let v: i64 = v.parse().unwrap();
        assert!(v <= version);
        let file = std::fs::read_dir(migrations(backend))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{v:04}_")))
            })
            .unwrap_or_else(|| panic!("migration {v} of {} is gone", backend.name()));
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(
            hex(&sha2::Sha384::digest(&bytes)),
            sum,
            "{} was changed after a release shipped it: add a new migration instead",
            file.display()
        );
        std::fs::write(out.path().join(file.file_name().unwrap()), bytes).unwrap();
        copied += 1;
    }
    assert_eq!(copied, version, "every migration up to {version} is pinned");
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn upgrade_from(backend: Backend, version: i64) {
    let Some((db, _dir)) = empty(backend).await else {
        return;
    };
    let fixture = fixtures().join(format!("{version:04}"));
    // The database as that release made it: its migrations, then its data.
    let old = released_migrations(backend, &fixture, version);
    let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
    let data = std::fs::read_to_string(fixture.join(format!("{}.sql", backend.name()))).unwrap();
    match db.pool() {
        cairn_store::Pool::Sqlite(p) => {
            migrator.run(p).await.unwrap();
            sqlx::raw_sql(&data).execute(p).await.unwrap();
        }
        cairn_store::Pool::Postgres(p) => {
            migrator.run(p).await.unwrap();
            sqlx::raw_sql(&data).execute(p).await.unwrap();
        }
    }
    let before = migrate::status(&db).await.unwrap();
    assert_eq!(before.current, version);

    // This release's migrations apply on top, and nothing is lost.
    let applied = migrate::run(&db).await.unwrap();
    assert_eq!(
        applied.len() as i64,
        before.latest - version,
        "every newer migration ran"
    );
    let after = migrate::status(&db).await.unwrap();
    assert_eq!((after.current, after.pending.len()), (after.latest, 0));

    let store = Store::new(db);
    let ann = store
        .user_by_email("ann@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ann.display_name, "Ann Archivist");
    assert_eq!((ann.role.as_str(), ann.state.as_str()), ("owner", "active"));
    let collection: Id = "01900000-0000-7000-8000-000000000002".parse().unwrap();
    let docs = store
        .documents_in(
            ann.id,
            collection,
            &cairn_store::documents::DocumentFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].title.as_deref(), Some("Granite"));
    // Chunks written by the old release are searchable (on SQLite through the in-memory index,
    // built from them).
    let found = store
        .keyword_candidates(ann.id, &["cairns".to_owned()], &SearchFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let chunks = store.found_chunks(ann.id, &[found[0].seq]).await.unwrap();
    assert!(chunks[0].text.contains("oldest cairns"));
    assert_eq!(chunks[0].location.0["heading_path"][0], "Granite");
    let conversation: Id = "01900000-0000-7000-8000-000000000006".parse().unwrap();
    let messages = store
        .messages_of(ann.id, conversation, None, 10, false)
        .await
        .unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].content, "On the northern trail [1].");
    assert!(messages[1].tokens_estimated);
}

/// Schema 8: Cairn 0.1.0 as of answers and budgets.
pub async fn upgrades_from_schema_8(backend: Backend) {
    upgrade_from(backend, 8).await;
}
