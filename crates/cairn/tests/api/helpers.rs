//! The test harness: [`TestApp`] builds the real application on `127.0.0.1:0` with a fresh
//! data directory and database, serves it until dropped or stopped, and offers typed helpers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use cairn::config::{Config, ConfigError, Inputs};
use cairn::http::error::ApiError;
use cairn::http::json::Json;
use cairn::{AppState, Application};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Run a test function on each backend: `name::sqlite` and `name::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if crate::helpers::postgres_available() {
                    super::$name(crate::helpers::Backend::Postgres).await
                }
            }
        }
    )*};
}
pub(crate) use on_both_backends;

/// Whether a peer a test needs is here. When it is not, the test is skipped (`missing` says
/// why), unless `require` — a `CAIRN_TEST_REQUIRE_*` variable, which CI sets — demands it.
pub fn peer_present(present: bool, require: &str, missing: &str) -> bool {
    if !present {
        assert!(
            std::env::var_os(require).is_none(),
            "{require} is set but {missing}"
        );
        eprintln!("skipped: {missing}");
    }
    present
}

/// A non-empty environment variable naming a peer, or `None` (see [`peer_present`]).
pub fn peer_var(name: &str, require: &str) -> Option<String> {
    let value = std::env::var(name).ok().filter(|v| !v.is_empty());
    peer_present(value.is_some(), require, &format!("{name} is not set"));
    value
}

pub fn postgres_available() -> bool {
    peer_present(
        cairn_store::testing::postgres_admin_url().is_some(),
        "CAIRN_TEST_REQUIRE_POSTGRES",
        "CAIRN_TEST_POSTGRES_URL is not set",
    )
}

pub fn redis_url() -> Option<String> {
    let url = cairn_store::testing::redis_url();
    peer_present(
        url.is_some(),
        "CAIRN_TEST_REQUIRE_REDIS",
        "CAIRN_TEST_REDIS_URL is not set",
    );
    url
}

pub fn s3_url() -> Option<String> {
    peer_var("CAIRN_TEST_S3_URL", "CAIRN_TEST_REQUIRE_S3")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoBody {
    name: String,
}

#[derive(Deserialize)]
struct SlowQuery {
    ms: u64,
}

/// Probe routes mounted under the real middleware stack.
fn probe_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/test/echo",
            post(|Json(body): Json<EchoBody>| async move {
                Json(serde_json::json!({ "name": body.name }))
            }),
        )
        .route(
            "/test/panic",
            get(|| async {
                if std::env::var_os("CAIRN_TEST_NEVER_SET_THIS").is_none() {
                    panic!("probe panic");
                }
                "unreachable"
            }),
        )
        .route(
            "/test/internal",
            get(|| async {
                Err::<(), _>(ApiError::internal(anyhow::anyhow!(
                    "boom: connection string postgres://u:leaked@h/db"
                )))
            }),
        )
        .route(
            "/test/slow",
            get(
                |axum::extract::Query(q): axum::extract::Query<SlowQuery>| async move {
                    tokio::time::sleep(Duration::from_millis(q.ms)).await;
                    "done"
                },
            ),
        )
}

pub struct TestAppBuilder {
    backend: Backend,
    settings: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    listener: Option<TcpListener>,
}

impl TestAppBuilder {
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    /// Serve on this listener instead of a fresh `127.0.0.1:0` one.
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Reuse a data directory (and with it the SQLite database and secrets).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// The configuration this builder would start with.
    pub async fn config(
        &mut self,
    ) -> Result<(Config, Option<tempfile::TempDir>), Vec<ConfigError>> {
        let (dir, tmp) = match &self.data_dir {
            Some(d) => (d.clone(), None),
            None => {
                let tmp = tempfile::tempdir().unwrap();
                (tmp.path().join("data"), Some(tmp))
            }
        };
        let mut flags = vec![
            (
                "data_dir".to_owned(),
                dir.display().to_string(),
                "--data-dir".to_owned(),
            ),
            ("log_level".to_owned(), "warn".to_owned(), "test".to_owned()),
        ];
        for (key, value) in [
            // Tests are not about hashing cost.
            ("auth.argon2_memory_kib", "1024".to_owned()),
            ("auth.argon2_iterations", "1".to_owned()),
            // Suites sign in hundreds of times from one address; limits have their own tests.
            ("rate_limit.general_per_minute", "1000000".to_owned()),
            ("rate_limit.auth_per_minute", "1000000".to_owned()),
            ("rate_limit.account_per_minute", "1000000".to_owned()),
            // Tests share one Redis: keep their keys apart.
            (
                "redis_key_prefix",
                format!("test-{}:", uuid::Uuid::now_v7().simple()),
            ),
        ] {
            flags.push((key.to_owned(), value, "test".to_owned()));
        }
        if self.backend == Backend::Postgres
            && !self.settings.iter().any(|(k, _)| k == "database_url")
        {
            let admin = cairn_store::testing::postgres_admin_url().unwrap();
            let url = cairn_store::testing::create_postgres_database(&admin)
                .await
                .unwrap();
            self.settings.push(("database_url".into(), url));
        }
        for (k, v) in &self.settings {
            flags.push((k.clone(), v.clone(), format!("--set {k}")));
        }
        let config = Config::load(&Inputs {
            flags,
            ..Inputs::default()
        })?;
        Ok((config, tmp))
    }

    pub async fn try_spawn(mut self) -> Result<TestApp, cairn::app::StartError> {
        let (config, tmp) = self.config().await.expect("test configuration is valid");
        let listener = match self.listener.take() {
            Some(l) => l,
            None => TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let app = Application::build_with_listener(config, listener, Some(probe_routes())).await?;
        let addr = app.local_addr().unwrap();
        let redirect_addr = app.redirect_addr();
        let state = app.state().clone();
        let data_dir = state.config.data_dir.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        Ok(TestApp {
            addr,
            redirect_addr,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            state,
            data_dir,
            shutdown: Some(tx),
            handle: Some(handle),
            _tmp: tmp,
        })
    }

    pub async fn spawn(self) -> TestApp {
        match self.try_spawn().await {
            Ok(app) => app,
            Err(e) => panic!("the test app did not start: {e}"),
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The plain-HTTP redirect listener (`tls.redirect_listen`), when there is one.
    pub redirect_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    pub state: AppState,
    pub data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestApp {
    pub fn builder(backend: Backend) -> TestAppBuilder {
        TestAppBuilder {
            backend,
            settings: Vec::new(),
            data_dir: None,
            listener: None,
        }
    }

    pub async fn spawn(backend: Backend) -> TestApp {
        Self::builder(backend).spawn().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Signal shutdown and wait for the server to finish draining.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.unwrap(),
            None => Ok(()),
        }
    }

    /// Signal shutdown without waiting.
    pub fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().unwrap()
    }
}

/// The `error` object of a JSON error body, after checking the status.
pub async fn error_body(resp: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    body["error"].clone()
}

/// A signed-in session's credentials (token mode).
#[derive(Debug, Clone)]
pub struct Session {
    pub session_id: String,
    pub access: String,
    pub refresh: String,
}

impl Session {
    pub fn from_body(body: &serde_json::Value) -> Session {
        let s = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
        assert!(body["user"]["id"].is_string(), "{body}");
        Session {
            session_id: s("session_id"),
            access: s("access_token"),
            refresh: s("refresh_token"),
        }
    }
}

pub const OWNER_EMAIL: &str = "owner@example.com";
pub const PASSWORD: &str = "correct horse battery staple";

impl TestApp {
    pub fn setup_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("setup-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Create the owner through first-run setup and return its session.
    pub async fn create_owner(&self) -> Session {
        let resp = self
            .client
            .post(self.url("/api/setup"))
            .json(&serde_json::json!({
                "setup_token": self.setup_token(),
                "email": OWNER_EMAIL,
                "password": PASSWORD,
                "display_name": "Olive Owner",
                "workspace_name": "Acme",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        Session::from_body(&resp.json().await.unwrap())
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/auth/sign-in"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// A user in `state` with `role`, created directly in the store, signed in.
    pub async fn user_with(&self, email: &str, role: &str, state: &str) -> Session {
        let hash = self.state.hasher.hash(PASSWORD.into()).await.unwrap();
        let user = self
            .state
            .store
            .create_user(&cairn_store::accounts::NewUser {
                email: email.into(),
                display_name: email.into(),
                password_hash: hash,
                role: role.into(),
                state: "active".into(),
            })
            .await
            .unwrap();
        let resp = self.sign_in(email, PASSWORD).await;
        assert_eq!(resp.status(), 200);
        let session = Session::from_body(&resp.json().await.unwrap());
        if state != "active" {
            self.state
                .store
                .set_user_state(user.id, state)
                .await
                .unwrap();
        }
        session
    }

    /// Create an API key with `scopes` for the session's user; returns the key.
    pub async fn api_key(&self, s: &Session, scopes: &[&str]) -> String {
        let resp = self
            .client
            .post(self.url("/api/me/api-keys"))
            .bearer_auth(&s.access)
            .json(&serde_json::json!({ "name": "test key", "scopes": scopes }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let body: serde_json::Value = resp.json().await.unwrap();
        body["key"].as_str().unwrap().to_owned()
    }

    /// `method path` as `s`, with a JSON body if given.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        s: &Session,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&s.access);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    pub async fn get_as(&self, path: &str, s: &Session) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(&s.access)
            .send()
            .await
            .unwrap()
    }
}
