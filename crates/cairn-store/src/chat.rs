//! Model providers and models, prices, conversations and their messages.
//!
//! Conversations belong to one person: every read and write of a conversation or its messages
//! names the acting user and checks ownership in the same statement, so a wrong id is simply
//! not found.

use crate::db::BeginWrite;
use serde::Serialize;
use serde_json::Value;

use crate::error::{StoreError, StoreResult};
use crate::types::{Id, Timestamp};
use crate::{on_pool, Json, Store};

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ProviderRow {
    pub id: Id,
    pub name: String,
    pub kind: String,
    pub base_url: String,
    #[serde(skip)]
    pub sealed_api_key: Option<Vec<u8>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ModelRow {
    pub id: Id,
    pub name: String,
    pub provider_id: Id,
    pub upstream_model: String,
    pub context_tokens: i64,
    pub max_output_tokens: i64,
    /// Comma-separated roles that may use it.
    pub roles: String,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Micro-units of the workspace currency per million tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PriceRow {
    pub model: String,
    pub input_micros: i64,
    pub output_micros: i64,
    pub embedding_micros: i64,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ConversationRow {
    pub id: Id,
    #[serde(skip)]
    pub user_id: Id,
    pub title: String,
    pub model: String,
    /// The collections it searches; `None`: all the owner may read.
    pub collections: Option<Json<Vec<Id>>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct MessageRow {
    pub id: Id,
    pub conversation_id: Id,
    pub role: String,
    pub content: String,
    /// `complete`, `incomplete` (cut short; the partial answer is kept) or `failed`.
    pub status: String,
    pub model: Option<String>,
    pub error_code: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub tokens_estimated: bool,
    pub cost_micros: i64,
    pub first_token_ms: Option<i64>,
    pub latency_ms: Option<i64>,
    pub sources: Option<Json<Value>>,
    pub citations: Option<Json<Value>>,
    pub created_at: Timestamp,
}

impl MessageRow {
    /// A message with no usage, sources or timings.
    pub fn new(conversation_id: Id, role: &str, content: String) -> Self {
        Self {
            id: Id::new(),
            conversation_id,
            role: role.to_owned(),
            content,
            status: "complete".into(),
            model: None,
            error_code: None,
            input_tokens: 0,
            output_tokens: 0,
            tokens_estimated: false,
            cost_micros: 0,
            first_token_ms: None,
            latency_ms: None,
            sources: None,
            citations: None,
            created_at: Timestamp::now(),
        }
    }
}

const PROVIDER_COLUMNS: &str = "id, name, kind, base_url, sealed_api_key, created_at, updated_at";
const MODEL_COLUMNS: &str = "id, name, provider_id, upstream_model, context_tokens, \
     max_output_tokens, roles, enabled, created_at, updated_at";
const CONVERSATION_COLUMNS: &str = "id, user_id, title, model, collections, created_at, updated_at";
const MESSAGE_COLUMNS: &str = "id, conversation_id, role, content, status, model, error_code, \
     input_tokens, output_tokens, tokens_estimated, cost_micros, first_token_ms, latency_ms, \
     sources, citations, created_at";

fn found(n: u64) -> StoreResult<()> {
    if n == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

impl Store {
    // --- providers -------------------------------------------------------------------------

    pub async fn create_provider(&self, p: &ProviderRow) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO llm_providers ({PROVIDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        on_pool!(self.db.pool(), pool => sqlx::query(&sql).bind(p.id).bind(&p.name)
            .bind(&p.kind).bind(&p.base_url).bind(&p.sealed_api_key).bind(p.created_at)
            .bind(p.updated_at).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn providers(&self) -> StoreResult<Vec<ProviderRow>> {
        let sql = format!("SELECT {PROVIDER_COLUMNS} FROM llm_providers ORDER BY name");
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, ProviderRow>(&sql).fetch_all(p).await)?)
    }

    pub async fn provider(&self, id: Id) -> StoreResult<Option<ProviderRow>> {
        let sql = format!("SELECT {PROVIDER_COLUMNS} FROM llm_providers WHERE id = $1");
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, ProviderRow>(&sql).bind(id).fetch_optional(p).await)?)
    }

    /// Replace a provider's settings (all columns but `id` and `created_at`).
    pub async fn update_provider(&self, p: &ProviderRow) -> StoreResult<()> {
        let sql = "UPDATE llm_providers SET name = $2, kind = $3, base_url = $4, \
                   sealed_api_key = $5, updated_at = $6 WHERE id = $1";
        let n = on_pool!(self.db.pool(), pool => sqlx::query(sql).bind(p.id).bind(&p.name)
            .bind(&p.kind).bind(&p.base_url).bind(&p.sealed_api_key).bind(p.updated_at)
            .execute(pool).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    /// Delete a provider and its models.
    pub async fn delete_provider(&self, id: Id) -> StoreResult<()> {
        let n = on_pool!(self.db.pool(), p => sqlx::query("DELETE FROM llm_providers WHERE id = $1")
            .bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    // --- models ----------------------------------------------------------------------------

    pub async fn create_model(&self, m: &ModelRow) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO llm_models ({MODEL_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        on_pool!(self.db.pool(), p => sqlx::query(&sql).bind(m.id).bind(&m.name)
            .bind(m.provider_id).bind(&m.upstream_model).bind(m.context_tokens)
            .bind(m.max_output_tokens).bind(&m.roles).bind(m.enabled).bind(m.created_at)
            .bind(m.updated_at).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn models(&self) -> StoreResult<Vec<ModelRow>> {
        let sql = format!("SELECT {MODEL_COLUMNS} FROM llm_models ORDER BY name");
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, ModelRow>(&sql).fetch_all(p).await)?)
    }

    pub async fn model(&self, id: Id) -> StoreResult<Option<ModelRow>> {
        let sql = format!("SELECT {MODEL_COLUMNS} FROM llm_models WHERE id = $1");
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, ModelRow>(&sql).bind(id).fetch_optional(p).await)?)
    }

    /// The model named `name` and its provider.
    pub async fn model_named(&self, name: &str) -> StoreResult<Option<(ModelRow, ProviderRow)>> {
        let model_sql = format!("SELECT {MODEL_COLUMNS} FROM llm_models WHERE name = $1");
        let provider_sql = format!("SELECT {PROVIDER_COLUMNS} FROM llm_providers WHERE id = $1");
        Ok(on_pool!(self.db.pool(), p => {
            let mut conn = p.acquire().await?;
            let Some(m) = sqlx::query_as::<_, ModelRow>(&model_sql).bind(name)
                .fetch_optional(&mut *conn).await? else {
                return Ok(None);
            };
            let provider = sqlx::query_as::<_, ProviderRow>(&provider_sql).bind(m.provider_id)
                .fetch_optional(&mut *conn).await?;
            Ok::<_, sqlx::Error>(provider.map(|pr| (m, pr)))
        })?)
    }

    pub async fn update_model(&self, m: &ModelRow) -> StoreResult<()> {
        let sql = "UPDATE llm_models SET name = $2, provider_id = $3, upstream_model = $4, \
                   context_tokens = $5, max_output_tokens = $6, roles = $7, enabled = $8, \
                   updated_at = $9 WHERE id = $1";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(m.id).bind(&m.name)
            .bind(m.provider_id).bind(&m.upstream_model).bind(m.context_tokens)
            .bind(m.max_output_tokens).bind(&m.roles).bind(m.enabled).bind(m.updated_at)
            .execute(p).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    pub async fn delete_model(&self, id: Id) -> StoreResult<()> {
        let n = on_pool!(self.db.pool(), p => sqlx::query("DELETE FROM llm_models WHERE id = $1")
            .bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    // --- prices ----------------------------------------------------------------------------

    pub async fn set_price(&self, price: &PriceRow) -> StoreResult<()> {
        let sql = "INSERT INTO model_prices (model, input_micros, output_micros, \
                   embedding_micros, updated_at) VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (model) DO UPDATE SET input_micros = excluded.input_micros, \
                   output_micros = excluded.output_micros, \
                   embedding_micros = excluded.embedding_micros, updated_at = excluded.updated_at";
        on_pool!(self.db.pool(), p => sqlx::query(sql).bind(&price.model)
            .bind(price.input_micros).bind(price.output_micros).bind(price.embedding_micros)
            .bind(price.updated_at).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn delete_price(&self, model: &str) -> StoreResult<()> {
        let n = on_pool!(self.db.pool(), p =>
            sqlx::query("DELETE FROM model_prices WHERE model = $1")
            .bind(model).execute(p).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    pub async fn prices(&self) -> StoreResult<Vec<PriceRow>> {
        let sql = "SELECT model, input_micros, output_micros, embedding_micros, updated_at \
                   FROM model_prices ORDER BY model";
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, PriceRow>(sql).fetch_all(p).await)?)
    }

    pub async fn price(&self, model: &str) -> StoreResult<Option<PriceRow>> {
        let sql = "SELECT model, input_micros, output_micros, embedding_micros, updated_at \
                   FROM model_prices WHERE model = $1";
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, PriceRow>(sql).bind(model).fetch_optional(p).await)?)
    }

    // --- conversations ---------------------------------------------------------------------

    pub async fn create_conversation(&self, c: &ConversationRow) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO conversations ({CONVERSATION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        on_pool!(self.db.pool(), p => sqlx::query(&sql).bind(c.id).bind(c.user_id)
            .bind(&c.title).bind(&c.model).bind(&c.collections).bind(c.created_at)
            .bind(c.updated_at).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// `user`'s conversations, newest first, older than `before`.
    pub async fn conversations_of(
        &self,
        user: Id,
        before: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<ConversationRow>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations \
             WHERE user_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, ConversationRow>(&sql)
            .bind(user).bind(before).bind(i64::from(limit)).fetch_all(p).await)?,
        )
    }

    /// One of `user`'s conversations.
    pub async fn conversation_of(&self, user: Id, id: Id) -> StoreResult<Option<ConversationRow>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $2 AND user_id = $1"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, ConversationRow>(&sql)
            .bind(user).bind(id).fetch_optional(p).await)?,
        )
    }

    /// Change one of `user`'s conversations (title, model, collections).
    pub async fn update_conversation(&self, user: Id, c: &ConversationRow) -> StoreResult<()> {
        let sql = "UPDATE conversations SET title = $3, model = $4, collections = $5, \
                   updated_at = $6 WHERE id = $2 AND user_id = $1";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(user).bind(c.id)
            .bind(&c.title).bind(&c.model).bind(&c.collections).bind(Timestamp::now())
            .execute(p).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    /// Delete one of `user`'s conversations with its messages.
    pub async fn delete_conversation(&self, user: Id, id: Id) -> StoreResult<()> {
        let n = on_pool!(self.db.pool(), p =>
            sqlx::query("DELETE FROM conversations WHERE id = $2 AND user_id = $1")
            .bind(user).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    /// Add a message to one of `user`'s conversations (and mark it updated), in one
    /// transaction; [`StoreError::NotFound`] if the conversation is not theirs or is gone.
    pub async fn add_message(&self, user: Id, m: &MessageRow) -> StoreResult<()> {
        let touch = "UPDATE conversations SET updated_at = $3 WHERE id = $2 AND user_id = $1";
        let sql = format!(
            "INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
             $9, $10, $11, $12, $13, $14, $15, $16)"
        );
        on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query(touch).bind(user).bind(m.conversation_id).bind(Timestamp::now())
                .execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            sqlx::query(&sql).bind(m.id).bind(m.conversation_id).bind(&m.role).bind(&m.content)
                .bind(&m.status).bind(&m.model).bind(&m.error_code).bind(m.input_tokens)
                .bind(m.output_tokens).bind(m.tokens_estimated).bind(m.cost_micros)
                .bind(m.first_token_ms).bind(m.latency_ms).bind(&m.sources).bind(&m.citations)
                .bind(m.created_at).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })
    }

    /// A page of one of `user`'s conversations: oldest first after `from`, or newest first
    /// before `from` (a long conversation opens at its end and loads older pages upwards).
    pub async fn messages_of(
        &self,
        user: Id,
        conversation: Id,
        from: Option<Id>,
        limit: u32,
        newest_first: bool,
    ) -> StoreResult<Vec<MessageRow>> {
        let (past, order) = if newest_first {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $2 \
             AND EXISTS (SELECT 1 FROM conversations c WHERE c.id = $2 AND c.user_id = $1) \
             AND ($3 IS NULL OR id {past} $3) ORDER BY id {order} LIMIT $4"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, MessageRow>(&sql)
            .bind(user).bind(conversation).bind(from).bind(i64::from(limit))
            .fetch_all(p).await)?,
        )
    }

    /// The last `n` messages of one of `user`'s conversations, oldest first.
    pub async fn recent_messages(
        &self,
        user: Id,
        conversation: Id,
        n: u32,
    ) -> StoreResult<Vec<MessageRow>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $2 \
             AND EXISTS (SELECT 1 FROM conversations c WHERE c.id = $2 AND c.user_id = $1) \
             ORDER BY id DESC LIMIT $3"
        );
        let mut rows = on_pool!(self.db.pool(), p => sqlx::query_as::<_, MessageRow>(&sql)
            .bind(user).bind(conversation).bind(i64::from(n)).fetch_all(p).await)?;
        rows.reverse();
        Ok(rows)
    }
}
