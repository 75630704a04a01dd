//! `cairn admin …`: account rescue from the command line, for operators with access to the
//! server's configuration (and so its database) — creating the first owner without the web,
//! and resetting a password when nobody can sign in. Passwords come on standard input, never
//! as arguments (which other users can read in the process list).

use std::io::Read;

use cairn_store::accounts::NewUser;
use cairn_store::audit::AuditEntry;
use cairn_store::Store;

use super::password::from_config;
use super::{email, setup, Role, State};
use crate::config::Config;

/// Read the password from standard input (one line, trailing newline removed).
pub fn read_password_stdin() -> anyhow::Result<String> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let password = input.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    Ok(password)
}

fn check(config: &Config, password: &str, email: &str) -> anyhow::Result<()> {
    let (_, policy) = from_config(&config.auth)?;
    let problems = policy.check(password, email);
    anyhow::ensure!(problems.is_empty(), "the password {}", problems.join("; "));
    Ok(())
}

async fn record(store: &Store, action: &str, target: cairn_store::Id) {
    let mut e = AuditEntry::new(action);
    e.target_type = Some("user".into());
    e.target_id = Some(target.to_string());
    e.details = Some(cairn_store::Json(serde_json::json!({ "via": "cli" })));
    if let Err(err) = store.append_audit(&e).await {
        eprintln!("cairn: warning: could not write the audit log: {err}");
    }
}

/// Create an account: the owner if the workspace has none, else an admin (or `role`).
pub async fn create(
    store: &Store,
    config: &Config,
    raw_email: &str,
    name: Option<&str>,
    role: Option<Role>,
    password: String,
) -> anyhow::Result<(Role, String)> {
    let email = email::normalize(raw_email).map_err(|e| anyhow::anyhow!(e.message()))?;
    check(config, &password, &email)?;
    let has_owner = store.has_owner().await?;
    let role = match role {
        Some(Role::Owner) if has_owner => anyhow::bail!("the workspace already has an owner"),
        Some(r) => r,
        None if has_owner => Role::Admin,
        None => Role::Owner,
    };
    let (hasher, _) = from_config(&config.auth)?;
    let hash = hasher.hash(password).await?;
    let user = store
        .create_user(&NewUser {
            email: email.clone(),
            display_name: name
                .map(str::to_owned)
                .unwrap_or_else(|| email.split('@').next().unwrap_or(&email).to_owned()),
            password_hash: hash,
            role: role.as_str().into(),
            state: State::Active.as_str().into(),
        })
        .await
        .map_err(|e| match e {
            cairn_store::StoreError::Conflict { .. } => {
                anyhow::anyhow!("an account with that email already exists")
            }
            other => other.into(),
        })?;
    if role == Role::Owner {
        setup::consume(store, config).await;
    }
    record(store, "admin.user.created", user.id).await;
    Ok((role, email))
}

/// Set a new password for the account with `raw_email`, ending all of its sessions.
pub async fn reset_password(
    store: &Store,
    config: &Config,
    raw_email: &str,
    password: String,
) -> anyhow::Result<String> {
    let email = email::normalize(raw_email).map_err(|e| anyhow::anyhow!(e.message()))?;
    let user = store
        .user_by_email(&email)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no account has the email {email}"))?;
    check(config, &password, &email)?;
    let (hasher, _) = from_config(&config.auth)?;
    let hash = hasher.hash(password).await?;
    store.set_password(user.id, &hash).await?;
    crate::auth::standing_feed::announce_flush(config, store).await;
    record(store, "auth.password.reset", user.id).await;
    Ok(email)
}
