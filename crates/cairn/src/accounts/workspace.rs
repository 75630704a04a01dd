//! Workspace settings over HTTP: the name and branding everyone signed in may read (the name,
//! logo and accent colour also before signing in, for the sign-in page) and admins change at run
//! time. Stored as one versioned system setting (`workspace`), so two
//! admins editing at once cannot overwrite each other unseen: send the `version` you read and a
//! stale one is refused with 409 `version_conflict`. Every change is audited with its before and
//! after values.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use cairn_store::settings::{Expect, SystemSetting};
use cairn_store::{Id, StoreError, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::context::Ctx;
use crate::app::AppState;
use crate::auth::{ApiRoutes, Rule, Scope};
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;

/// The system-settings key holding the workspace settings.
pub const KEY: &str = "workspace";
/// Longest workspace name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Largest logo, as a `data:` URL, in bytes (≈ 192 KiB of image).
pub const MAX_LOGO_BYTES: usize = 256 * 1024;
/// Longest welcome message, in characters.
pub const MAX_WELCOME_CHARS: usize = 4000;
/// Most suggested prompts, and the longest one in characters.
pub const MAX_PROMPTS: usize = 8;
pub const MAX_PROMPT_CHARS: usize = 300;
/// The image types a logo may have: raster only (an SVG can carry script).
const LOGO_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/webp", "image/gif"];

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .route(
            Method::GET,
            "/api/workspace",
            Rule::SIGNED_IN.key(Scope::Read),
            show,
        )
        .route(
            Method::GET,
            "/api/workspace/public",
            Rule::PUBLIC,
            show_public,
        )
        .route(
            Method::PATCH,
            "/api/workspace",
            Rule::ADMIN.key(Scope::Admin),
            update,
        )
}

/// The stored settings; fields absent from storage take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub name: Option<String>,
    /// A `data:image/…;base64,…` URL (PNG, JPEG, WebP or GIF).
    pub logo: Option<String>,
    /// `#rrggbb`, the web app's accent colour.
    pub accent_color: Option<String>,
    /// Shown to members above an empty conversation (Markdown, rendered inert).
    pub welcome_message: Option<String>,
    /// Questions offered as one-click starts of a conversation.
    pub suggested_prompts: Vec<String>,
}

/// What the sign-in page may show before anyone signs in.
#[derive(Serialize)]
struct PublicView {
    name: Option<String>,
    logo: Option<String>,
    accent_color: Option<String>,
    /// `closed`, `invite`, `approval` or `open`: whether (and how) people may sign up.
    registration: &'static str,
    /// Whether first-run setup is still to be done.
    setup_needed: bool,
}

#[derive(Serialize)]
struct View {
    #[serde(flatten)]
    settings: Settings,
    /// Send it back with a change to refuse overwriting someone else's edit.
    version: i64,
    updated_at: Option<Timestamp>,
    updated_by: Option<Id>,
}

fn view(row: Option<SystemSetting>) -> View {
    match row {
        Some(row) => View {
            settings: serde_json::from_value(row.value.0).unwrap_or_default(),
            version: row.version,
            updated_at: Some(row.updated_at),
            updated_by: row.updated_by,
        },
        None => View {
            settings: Settings::default(),
            version: 0,
            updated_at: None,
            updated_by: None,
        },
    }
}

/// The workspace name, checked: trimmed, 1 to [`MAX_NAME_CHARS`] characters, no control
/// characters.
pub fn check_name(field: &'static str, raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_field(
            field,
            "must be 1 to 100 characters, without control characters",
        ));
    }
    Ok(name.to_owned())
}

async fn show(State(state): State<AppState>) -> ApiResult<Json<View>> {
    Ok(Json(view(state.store.setting(KEY).await?)))
}

async fn show_public(State(state): State<AppState>) -> ApiResult<Json<PublicView>> {
    use crate::config::Registration;
    let settings = view(state.store.setting(KEY).await?).settings;
    Ok(Json(PublicView {
        name: settings.name,
        logo: settings.logo,
        accent_color: settings.accent_color,
        registration: match state.config.auth.registration {
            Registration::Closed => "closed",
            Registration::Invite => "invite",
            Registration::Approval => "approval",
            Registration::Open => "open",
        },
        setup_needed: !state.store.has_owner().await?,
    }))
}

/// A logo: a base64 `data:` URL of a raster image, at most [`MAX_LOGO_BYTES`], whose bytes are
/// what the URL says they are.
fn check_logo(raw: &str) -> ApiResult<String> {
    use base64::Engine;
    let bad = |why: &str| ApiError::invalid_field("logo", why);
    if raw.len() > MAX_LOGO_BYTES {
        return Err(bad("must be at most 256 KiB as a data: URL"));
    }
    let rest = raw
        .strip_prefix("data:")
        .ok_or_else(|| bad("must be a data: URL (data:image/png;base64,…)"))?;
    let (mime, data) = rest
        .split_once(";base64,")
        .ok_or_else(|| bad("must be a base64 data: URL"))?;
    if !LOGO_TYPES.contains(&mime) {
        return Err(bad("must be a PNG, JPEG, WebP or GIF image"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| bad("is not valid base64"))?;
    let sniffed = match bytes.as_slice() {
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [0xff, 0xd8, 0xff, ..] => "image/jpeg",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        _ => "",
    };
    if sniffed != mime {
        return Err(bad("does not contain the image type it declares"));
    }
    Ok(raw.to_owned())
}

fn check_color(raw: &str) -> ApiResult<String> {
    let c = raw.trim();
    if c.len() == 7 && c.starts_with('#') && c[1..].bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(c.to_ascii_lowercase())
    } else {
        Err(ApiError::invalid_field(
            "accent_color",
            "must be a colour like #3b82f6",
        ))
    }
}

fn check_welcome(raw: &str) -> ApiResult<Option<String>> {
    let text = raw.trim();
    if text.chars().count() > MAX_WELCOME_CHARS {
        return Err(ApiError::invalid_field(
            "welcome_message",
            "must be at most 4000 characters",
        ));
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

fn check_prompts(raw: Vec<String>) -> ApiResult<Vec<String>> {
    if raw.len() > MAX_PROMPTS {
        return Err(ApiError::invalid_field(
            "suggested_prompts",
            "must have at most 8 prompts",
        ));
    }
    raw.iter()
        .map(|p| {
            let p = p.trim();
            if p.is_empty()
                || p.chars().count() > MAX_PROMPT_CHARS
                || p.chars().any(char::is_control)
            {
                Err(ApiError::invalid_field(
                    "suggested_prompts",
                    "each must be 1 to 300 characters, without control characters",
                ))
            } else {
                Ok(p.to_owned())
            }
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    /// The version read; omitted: overwrite whatever is there.
    version: Option<i64>,
    /// `null` clears the name.
    #[serde(default, deserialize_with = "present")]
    name: Option<Option<String>>,
    /// `null` removes the logo.
    #[serde(default, deserialize_with = "present")]
    logo: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    accent_color: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    welcome_message: Option<Option<String>>,
    suggested_prompts: Option<Vec<String>>,
}

async fn update(ctx: Ctx, Json(req): Json<Update>) -> ApiResult<Json<View>> {
    let current = ctx.state.store.setting(KEY).await?;
    let before: Settings = current
        .as_ref()
        .and_then(|r| serde_json::from_value(r.value.0.clone()).ok())
        .unwrap_or_default();
    let mut after = before.clone();
    if let Some(name) = req.name {
        after.name = name.map(|n| check_name("name", &n)).transpose()?;
    }
    if let Some(logo) = req.logo {
        after.logo = logo.map(|l| check_logo(&l)).transpose()?;
    }
    if let Some(color) = req.accent_color {
        after.accent_color = color.map(|c| check_color(&c)).transpose()?;
    }
    if let Some(welcome) = req.welcome_message {
        after.welcome_message = welcome.map(|w| check_welcome(&w)).transpose()?.flatten();
    }
    if let Some(prompts) = req.suggested_prompts {
        after.suggested_prompts = check_prompts(prompts)?;
    }
    let expect = match (req.version, &current) {
        (None, _) => Expect::Any,
        (Some(0), None) => Expect::Absent,
        (Some(v), Some(_)) => Expect::Version(v),
        (Some(_), None) => return Err(conflict()),
    };
    if after == before && current.is_some() {
        return Ok(Json(view(current)));
    }
    let value = serde_json::to_value(&after).map_err(ApiError::internal)?;
    let row = match ctx
        .state
        .store
        .put_setting(KEY, value, expect, Some(ctx.actor.user_id))
        .await
    {
        Ok(row) => row,
        Err(StoreError::Conflict { .. }) => return Err(conflict()),
        Err(e) => return Err(e.into()),
    };
    ctx.record(
        "settings.changed",
        Some(("setting", KEY.to_owned())),
        Some(
            json!({ "before": audited(&before), "after": audited(&after), "version": row.version }),
        ),
    )
    .await;
    Ok(Json(view(Some(row))))
}

/// Settings as the audit log records them: a logo by its size and digest, not its bytes.
fn audited(settings: &Settings) -> serde_json::Value {
    use sha2::Digest;
    let mut v = serde_json::to_value(settings).unwrap_or_default();
    if let (Some(logo), Some(obj)) = (&settings.logo, v.as_object_mut()) {
        let digest = hex::encode(&sha2::Sha256::digest(logo.as_bytes())[..8]);
        obj.insert(
            "logo".into(),
            json!(format!("{} bytes, sha256 {digest}…", logo.len())),
        );
    }
    v
}

/// A field that is present (possibly `null`), as opposed to absent (`None` via the default).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn conflict() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "version_conflict",
        "The workspace settings changed since you read them; reload and try again.",
    )
}
