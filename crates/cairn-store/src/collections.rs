//! Collections and who may use them. Every read and write here takes the acting user and checks
//! their membership in the same statement, so a caller can never list, read or change a
//! collection they are not a member of — the check cannot be forgotten by a handler.

use crate::db::BeginWrite;
use serde::Serialize;

use crate::error::{StoreError, StoreResult};
use crate::types::{Id, Timestamp};
use crate::{on_pool, Store};

/// What a member may do, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectionRole {
    /// Read and search.
    Viewer,
    /// Also add and delete documents.
    Editor,
    /// Also share, rename and delete the collection.
    Owner,
}

impl CollectionRole {
    pub fn as_str(self) -> &'static str {
        match self {
            CollectionRole::Viewer => "viewer",
            CollectionRole::Editor => "editor",
            CollectionRole::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(CollectionRole::Viewer),
            "editor" => Some(CollectionRole::Editor),
            "owner" => Some(CollectionRole::Owner),
            _ => None,
        }
    }

    /// The stored roles at least as strong as this one (for `role IN (…)` checks).
    fn at_least(self) -> &'static [&'static str] {
        match self {
            CollectionRole::Viewer => &["viewer", "editor", "owner"],
            CollectionRole::Editor => &["editor", "owner"],
            CollectionRole::Owner => &["owner"],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct CollectionRow {
    pub id: Id,
    pub name: String,
    pub description: String,
    pub personal_of: Option<Id>,
    pub created_by: Option<Id>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A collection as one member sees it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct MemberCollection {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub collection: CollectionRow,
    /// The caller's role.
    pub role: String,
    pub document_count: i64,
    pub size_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: Id,
    pub email: String,
    pub display_name: String,
    pub role: String,
    pub added_at: Timestamp,
}

const COLUMNS: &str =
    "c.id, c.name, c.description, c.personal_of, c.created_by, c.created_at, c.updated_at";

/// `'viewer', 'editor', 'owner'`: the stored roles at least as strong as `role`, for `IN (…)`.
pub(crate) fn role_list(role: CollectionRole) -> String {
    role.at_least()
        .iter()
        .map(|r| format!("'{r}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A collection with the member's role and its live document count and size, from
/// `collections c JOIN collection_members m`.
fn member_view_select() -> String {
    format!(
        "SELECT {COLUMNS}, m.role, \
           (SELECT COUNT(*) FROM documents d WHERE d.collection_id = c.id \
            AND d.deleted_at IS NULL) AS document_count, \
           (SELECT CAST(COALESCE(SUM(d.size_bytes), 0) AS BIGINT) FROM documents d \
            WHERE d.collection_id = c.id AND d.deleted_at IS NULL) AS size_bytes \
         FROM collections c JOIN collection_members m ON m.collection_id = c.id"
    )
}

/// The membership check every query in this module and in `documents` shares: `$1` is the
/// acting user, `roles` the roles that suffice. `alias` is the collection id column to test.
pub(crate) fn member_check(alias: &str, actor: &str, role: CollectionRole) -> String {
    let roles = role_list(role);
    format!(
        "EXISTS (SELECT 1 FROM collection_members m WHERE m.collection_id = {alias} \
         AND m.user_id = {actor} AND m.role IN ({roles}))"
    )
}

impl Store {
    /// Create a shared collection owned by `owner`.
    pub async fn create_collection(
        &self,
        owner: Id,
        name: &str,
        description: &str,
    ) -> StoreResult<CollectionRow> {
        self.insert_collection(owner, name, description, false)
            .await
    }

    async fn insert_collection(
        &self,
        owner: Id,
        name: &str,
        description: &str,
        personal: bool,
    ) -> StoreResult<CollectionRow> {
        let now = Timestamp::now();
        let row = CollectionRow {
            id: Id::new(),
            name: name.to_owned(),
            description: description.to_owned(),
            personal_of: personal.then_some(owner),
            created_by: Some(owner),
            created_at: now,
            updated_at: now,
        };
        let insert = "INSERT INTO collections (id, name, description, personal_of, created_by, \
                      created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let member = "INSERT INTO collection_members (collection_id, user_id, role, added_at, \
                      added_by) VALUES ($1, $2, 'owner', $3, $2)";
        on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(insert).bind(row.id).bind(&row.name).bind(&row.description)
                .bind(row.personal_of).bind(row.created_by).bind(now).bind(now)
                .execute(&mut *tx).await?;
            sqlx::query(member).bind(row.id).bind(owner).bind(now).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(row)
    }

    /// The user's personal collection, created on first use.
    pub async fn personal_collection(&self, user: Id) -> StoreResult<CollectionRow> {
        let sql = "SELECT id, name, description, personal_of, created_by, created_at, updated_at \
                   FROM collections WHERE personal_of = $1";
        let found = on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, CollectionRow>(sql).bind(user).fetch_optional(p).await)?;
        if let Some(c) = found {
            return Ok(c);
        }
        match self.insert_collection(user, "Personal", "", true).await {
            // Two first uses at once: the other one created it.
            Err(StoreError::Conflict { .. }) => on_pool!(self.db.pool(), p =>
                sqlx::query_as::<_, CollectionRow>(sql).bind(user).fetch_one(p).await)
            .map_err(Into::into),
            other => other,
        }
    }

    /// The collections `user` is a member of, in id order after `after`, with their role and
    /// live document count and size.
    pub async fn collections_of(
        &self,
        user: Id,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<MemberCollection>> {
        let sql = format!(
            "{} WHERE m.user_id = $1 AND ($2 IS NULL OR c.id > $2) ORDER BY c.id LIMIT $3",
            member_view_select()
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, MemberCollection>(&sql)
            .bind(user).bind(after).bind(i64::from(limit)).fetch_all(p).await)?,
        )
    }

    /// One collection as `user` sees it, if they are a member with at least `role`.
    pub async fn collection_for(
        &self,
        user: Id,
        id: Id,
        role: CollectionRole,
    ) -> StoreResult<Option<MemberCollection>> {
        let sql = format!(
            "{} WHERE m.user_id = $1 AND c.id = $2 AND m.role IN ({})",
            member_view_select(),
            role_list(role)
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, MemberCollection>(&sql)
            .bind(user).bind(id).fetch_optional(p).await)?,
        )
    }

    /// Rename or redescribe a collection `actor` owns; [`StoreError::NotFound`] otherwise.
    pub async fn update_collection(
        &self,
        actor: Id,
        id: Id,
        name: &str,
        description: &str,
    ) -> StoreResult<()> {
        let sql = format!(
            "UPDATE collections SET name = $3, description = $4, updated_at = $5 \
             WHERE id = $2 AND {}",
            member_check("collections.id", "$1", CollectionRole::Owner)
        );
        let n = on_pool!(self.db.pool(), p => sqlx::query(&sql).bind(actor).bind(id).bind(name)
            .bind(description).bind(Timestamp::now()).execute(p).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// The members of a collection `actor` can see.
    pub async fn collection_members(&self, actor: Id, id: Id) -> StoreResult<Vec<MemberRow>> {
        let sql = format!(
            "SELECT u.id AS user_id, u.email, u.display_name, cm.role, cm.added_at \
             FROM collection_members cm JOIN users u ON u.id = cm.user_id \
             WHERE cm.collection_id = $2 AND {} ORDER BY cm.added_at, u.id",
            member_check("cm.collection_id", "$1", CollectionRole::Viewer)
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, MemberRow>(&sql)
            .bind(actor).bind(id).fetch_all(p).await)?,
        )
    }

    /// Give `user` `role` in a shared collection `actor` owns (adding or changing them).
    /// [`StoreError::NotFound`] when `actor` is not an owner, the collection is personal, or
    /// the user does not exist.
    pub async fn share_collection(
        &self,
        actor: Id,
        id: Id,
        user: Id,
        role: CollectionRole,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO collection_members (collection_id, user_id, role, added_at, added_by) \
             SELECT c.id, u.id, $4, $5, $1 FROM collections c, users u \
             WHERE c.id = $2 AND u.id = $3 AND c.personal_of IS NULL AND {} \
             ON CONFLICT (collection_id, user_id) DO UPDATE SET role = excluded.role",
            member_check("c.id", "$1", CollectionRole::Owner)
        );
        let lock = self.collection_lock();
        let role_sql =
            "SELECT role FROM collection_members WHERE collection_id = $1 AND user_id = $2";
        let others = "SELECT COUNT(*) FROM collection_members WHERE collection_id = $1 \
                      AND role = 'owner' AND user_id <> $2";
        let n: StoreResult<u64> = on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            if let Some(lock) = lock {
                sqlx::query(lock).bind(id).execute(&mut *tx).await?;
            }
            // Demoting the last owner would leave nobody to manage the collection.
            if role != CollectionRole::Owner {
                let current: Option<String> = sqlx::query_scalar(role_sql).bind(id).bind(user)
                    .fetch_optional(&mut *tx).await?;
                if current.as_deref() == Some("owner") {
                    let n: i64 = sqlx::query_scalar(others).bind(id).bind(user)
                        .fetch_one(&mut *tx).await?;
                    if n == 0 {
                        return Err(StoreError::Conflict { constraint: Some("last_owner".into()) });
                    }
                }
            }
            let n = sqlx::query(&sql).bind(actor).bind(id).bind(user).bind(role.as_str())
                .bind(Timestamp::now()).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(n)
        });
        if n? == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// On PostgreSQL, the statement that serialises membership changes of one collection (so
    /// two owners leaving at once cannot both succeed); SQLite has one writer already.
    fn collection_lock(&self) -> Option<&'static str> {
        match self.backend() {
            crate::Backend::Postgres => Some("SELECT id FROM collections WHERE id = $1 FOR UPDATE"),
            crate::Backend::Sqlite => None,
        }
    }

    /// Remove `user` from a collection `actor` owns (or `actor` leaving it themselves). The
    /// last owner cannot be removed: [`StoreError::Conflict`].
    pub async fn unshare_collection(&self, actor: Id, id: Id, user: Id) -> StoreResult<()> {
        let check = "SELECT COUNT(*) FROM collection_members WHERE collection_id = $1 \
                     AND role = 'owner' AND user_id <> $2";
        let delete = format!(
            "DELETE FROM collection_members WHERE collection_id = $2 AND user_id = $3 \
             AND ($1 = $3 OR {})",
            member_check(
                "collection_members.collection_id",
                "$1",
                CollectionRole::Owner
            )
        );
        let role_sql =
            "SELECT role FROM collection_members WHERE collection_id = $1 AND user_id = $2";
        let outcome: StoreResult<u64> = on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            let role: Option<String> = sqlx::query_scalar(role_sql).bind(id).bind(user)
                .fetch_optional(&mut *tx).await?;
            if role.as_deref() == Some("owner") {
                let others: i64 = sqlx::query_scalar(check).bind(id).bind(user)
                    .fetch_one(&mut *tx).await?;
                if others == 0 {
                    return Err(StoreError::Conflict { constraint: Some("last_owner".into()) });
                }
            }
            let n = sqlx::query(&delete).bind(actor).bind(id).bind(user)
                .execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(n)
        });
        if outcome? == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Delete a shared collection `actor` owns, with its documents and chunks. Returns the blob
    /// keys the caller must remove from blob storage. Personal collections cannot be deleted.
    pub async fn delete_collection(&self, actor: Id, id: Id) -> StoreResult<Vec<String>> {
        let owned = format!(
            "SELECT COUNT(*) FROM collections c WHERE c.id = $2 AND c.personal_of IS NULL AND {}",
            member_check("c.id", "$1", CollectionRole::Owner)
        );
        let blobs = "SELECT blob_key FROM documents WHERE collection_id = $1";
        let delete = "DELETE FROM collections WHERE id = $1";
        on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            let n: i64 = sqlx::query_scalar(&owned).bind(actor).bind(id).fetch_one(&mut *tx).await?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            let keys: Vec<String> = sqlx::query_scalar(blobs).bind(id).fetch_all(&mut *tx).await?;
            sqlx::query(delete).bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(keys)
        })
    }
}
