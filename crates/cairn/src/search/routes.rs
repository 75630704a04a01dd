//! `POST /api/search`: hybrid, keyword or semantic search over the collections the caller may
//! read (all of them, or those named).

use axum::http::{Method, StatusCode};
use cairn_store::search::SearchFilter;
use cairn_store::{Id, Timestamp};
use serde::Deserialize;
use serde_json::json;

use super::{Mode, Outcome, Request, SearchError};
use crate::accounts::context::Ctx;
use crate::auth::{ApiRoutes, Rule, Scope};
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new().route(
        Method::POST,
        "/api/search",
        Rule::MEMBER.key(Scope::Read),
        search,
    )
}

/// Most ids one filter list may name.
const MAX_FILTER_IDS: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    query: String,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    collections: Option<Vec<Id>>,
    #[serde(default)]
    documents: Option<Vec<Id>>,
    #[serde(default)]
    kinds: Option<Vec<String>>,
    #[serde(default)]
    created_after: Option<Timestamp>,
    #[serde(default)]
    created_before: Option<Timestamp>,
}

fn ids(field: &str, list: Option<Vec<Id>>) -> ApiResult<Option<Vec<Id>>> {
    match list {
        Some(v) if v.is_empty() => Err(ApiError::invalid_field(
            field,
            "must name at least one id when given (leave it out for all)",
        )),
        Some(v) if v.len() > MAX_FILTER_IDS => Err(ApiError::invalid_field(
            field,
            "names too many ids (at most 1000)",
        )),
        other => Ok(other),
    }
}

async fn search(ctx: Ctx, Json(body): Json<Body>) -> ApiResult<Json<Outcome>> {
    let state = &ctx.state;
    let limits = &state.config.search;
    let query = body.query.trim();
    if query.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query_empty",
            "Type something to search for.",
        ));
    }
    let chars = query.chars().count();
    if chars > limits.max_query_chars {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query_too_long",
            format!(
                "The query is {chars} characters long; the limit is {}.",
                limits.max_query_chars
            ),
        )
        .with_details(json!({ "max_chars": limits.max_query_chars, "chars": chars })));
    }
    let top_k = body.top_k.unwrap_or(limits.default_top_k);
    if top_k == 0 || top_k > limits.max_top_k {
        return Err(ApiError::invalid_field(
            "top_k",
            &format!("must be 1 to {}", limits.max_top_k),
        ));
    }
    if let Some(kinds) = &body.kinds {
        if kinds.is_empty() || kinds.len() > 50 {
            return Err(ApiError::invalid_field("kinds", "must name 1 to 50 kinds"));
        }
        if let Some(bad) = kinds
            .iter()
            .find(|k| k.parse::<cairn_ingest::Kind>().is_err())
        {
            return Err(ApiError::invalid_field(
                "kinds",
                &format!("`{bad}` is not a document kind"),
            ));
        }
    }
    if let (Some(a), Some(b)) = (body.created_after, body.created_before) {
        if a >= b {
            return Err(ApiError::invalid_field(
                "created_before",
                "must be later than created_after",
            ));
        }
    }
    let request = Request {
        query: query.to_owned(),
        mode: body.mode.unwrap_or(Mode::Hybrid),
        top_k,
        filter: SearchFilter {
            collections: ids("collections", body.collections)?,
            documents: ids("documents", body.documents)?,
            kinds: body.kinds,
            created_after: body.created_after,
            created_before: body.created_before,
        },
        vector: None,
    };
    let outcome = super::search(
        &state.store,
        state.embedder.as_ref(),
        None,
        &limits.ranking,
        ctx.actor.user_id,
        &request,
    )
    .await;
    match outcome {
        Ok(o) => {
            state
                .metrics
                .observe_search(o.mode.as_str(), o.took_ms / 1000.0);
            Ok(Json(o))
        }
        Err(SearchError::NoEmbedder) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "semantic_unavailable",
            "Semantic search needs an embedding model, and this workspace has none configured. \
             Use mode \"keyword\" or \"hybrid\".",
        )),
        Err(SearchError::Embedding(e)) => {
            tracing::warn!(error = %e, "could not embed a query");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "embedding_unavailable",
                "The embedding model could not be reached; try mode \"keyword\", or again later.",
            ))
        }
        Err(SearchError::Store(e)) => Err(e.into()),
    }
}
