//! Keeping every replica's standing cache honest: each change to an account, session or API key
//! committed here is announced to the other replicas, and theirs are heard here, through Redis
//! pub/sub when `redis_url` is set, else PostgreSQL `LISTEN`/`NOTIFY`. SQLite serves from one
//! process and needs no feed.
//!
//! While the feed is down (before it first connects, or after a dropped connection) this
//! replica's cache is not believed, so authentication reads the database. Changes made here
//! meanwhile wait in a channel subscribed for the feed's whole life and are announced on
//! reconnect, preceded by a "forget everything" message; the same message goes out when a
//! publish fails or announcements fall behind. So a missed announcement can never let a
//! suspended account or a revoked session through on another replica.

use std::time::Duration;

use cairn_store::{Backend, Id, Store};
use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use crate::config::Config;

/// Where announcements travel.
enum Feed {
    Redis {
        client: redis::Client,
        channel: String,
    },
    Postgres,
}

/// Start the feed for this configuration, if it needs one; the cache distrusts itself until
/// the feed is listening.
pub fn start(config: &Config, store: &Store) -> Option<tokio::task::JoinHandle<()>> {
    if !store.standing().enabled() {
        return None;
    }
    let feed = if let Some(url) = &config.redis_url {
        match redis::Client::open(url.expose()) {
            Ok(client) => Feed::Redis {
                client,
                channel: format!("{}standing", config.redis_key_prefix),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot use Redis for cache announcements; the standing cache is off");
                store.standing().set_trusted(false);
                return None;
            }
        }
    } else if store.backend() == Backend::Postgres {
        Feed::Postgres
    } else {
        return None;
    };
    store.standing().set_trusted(false);
    let mut bytes = [0u8; 8];
    // An instance tag only needs to differ between replicas; a clock fallback does.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = (std::process::id() as u64 ^ cairn_store::Timestamp::now().as_millis() as u64)
            .to_le_bytes();
    }
    let instance = u64::from_le_bytes(bytes);
    // Subscribed once, for the life of the feed: changes made while it reconnects wait here.
    let changes = store.standing().subscribe();
    Some(tokio::spawn(run(feed, store.clone(), instance, changes)))
}

/// From a process without a feed (the CLI): tell running servers to forget every cached
/// standing, after a change they would otherwise see only when their cache expires. Best
/// effort: nothing to tell on SQLite without Redis (one server, bounded by the cache's TTL).
pub async fn announce_flush(config: &Config, store: &Store) {
    // An instance tag no server uses (theirs are random).
    let payload = encode_flush(0);
    let result: anyhow::Result<()> = async {
        if let Some(url) = &config.redis_url {
            let client = redis::Client::open(url.expose())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PUBLISH")
                .arg(format!("{}standing", config.redis_key_prefix))
                .arg(&payload)
                .query_async::<i64>(&mut conn)
                .await?;
        } else {
            store.announce_standing(&payload).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not tell running servers to re-read accounts; they will within auth.standing_cache_secs");
    }
}

async fn run(feed: Feed, store: Store, instance: u64, mut changes: Receiver<Id>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let result = match &feed {
            Feed::Redis { client, channel } => {
                redis_session(client, channel, &store, instance, &mut changes).await
            }
            Feed::Postgres => pg_session(&store, instance, &mut changes).await,
        };
        store.standing().set_trusted(false);
        match result {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "lost the feed of account changes from other replicas; reading the database meanwhile");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn encode(instance: u64, user: Id) -> String {
    format!("{instance:016x}:{user}")
}

/// "Forget everything": sent when this replica may have failed to announce some changes (it
/// reconnected, a publish failed, or announcements fell behind).
fn encode_flush(instance: u64) -> String {
    format!("{instance:016x}:*")
}

/// What another replica announced.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    User(Id),
    Everything,
}

/// A change announced by another replica, or `None` for our own announcements and junk.
fn decode(payload: &str, instance: u64) -> Option<Heard> {
    let (from, what) = payload.split_once(':')?;
    if u64::from_str_radix(from, 16).ok()? == instance {
        return None;
    }
    if what == "*" {
        return Some(Heard::Everything);
    }
    what.parse().ok().map(Heard::User)
}

fn apply(store: &Store, heard: Heard) {
    match heard {
        Heard::User(user) => store.standing().forget_remote(user),
        Heard::Everything => store.standing().forget_all(),
    }
}

/// Listen and announce over Redis until either connection fails.
async fn redis_session(
    client: &redis::Client,
    channel: &str,
    store: &Store,
    instance: u64,
    changes: &mut Receiver<Id>,
) -> anyhow::Result<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    let mut publisher = client.get_multiplexed_async_connection().await?;
    // Whatever this replica could not announce while disconnected: others forget everything.
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(encode_flush(instance))
        .query_async::<i64>(&mut publisher)
        .await?;
    store.standing().set_trusted(true);
    tracing::debug!(channel, "listening for account changes on Redis");
    let mut messages = pubsub.on_message();
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { anyhow::bail!("the Redis subscription closed") };
                let payload: String = msg.get_payload()?;
                if let Some(heard) = decode(&payload, instance) {
                    apply(store, heard);
                }
            }
            change = changes.recv() => match change {
                Ok(user) => {
                    redis::cmd("PUBLISH").arg(channel).arg(encode(instance, user))
                        .query_async::<i64>(&mut publisher).await?;
                }
                // More changes than the channel holds: tell the others to forget everything.
                Err(RecvError::Lagged(_)) => {
                    redis::cmd("PUBLISH").arg(channel).arg(encode_flush(instance))
                        .query_async::<i64>(&mut publisher).await?;
                }
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    }
}

/// Listen and announce over PostgreSQL until the listening connection drops.
async fn pg_session(
    store: &Store,
    instance: u64,
    changes: &mut Receiver<Id>,
) -> anyhow::Result<()> {
    let Some(mut listener) = store.listen_standing().await? else {
        anyhow::bail!("not a PostgreSQL database");
    };
    store.announce_standing(&encode_flush(instance)).await?;
    store.standing().set_trusted(true);
    tracing::debug!("listening for account changes on PostgreSQL");
    loop {
        tokio::select! {
            note = listener.recv() => match note? {
                Some(payload) => {
                    if let Some(heard) = decode(&payload, instance) {
                        apply(store, heard);
                    }
                }
                // The connection dropped; notifications in between are lost.
                None => anyhow::bail!("the PostgreSQL listening connection dropped"),
            },
            change = changes.recv() => match change {
                Ok(user) => store.announce_standing(&encode(instance, user)).await?,
                Err(RecvError::Lagged(_)) => store.announce_standing(&encode_flush(instance)).await?,
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_and_skip_our_own() {
        let user = Id::new();
        let payload = encode(7, user);
        assert_eq!(decode(&payload, 8), Some(Heard::User(user)));
        assert_eq!(decode(&payload, 7), None);
        assert_eq!(decode(&encode_flush(7), 8), Some(Heard::Everything));
        assert_eq!(decode(&encode_flush(7), 7), None);
        assert_eq!(decode("junk", 8), None);
        assert_eq!(decode("zz:also-junk", 8), None);
    }
}
