//! Making and removing a link, shared by the web pages and the apps' API: the database change, its
//! audit record and the outbox job in one transaction, then an immediate delivery attempt.
//!
//! Every link gets a generation from a counter that only grows (`link_generations`); every message
//! to MAX about the link carries it, so MAX applies a message only while it describes the link's
//! current state (docs/architecture.md, «Links across the two parties»).

use crate::audit::{Event, Record};
use crate::outbox::{self, Job};
use crate::repo::{Session, User};
use crate::{DiaryState, audit, repo};
use edulink_store::{StoreError, sqlx};

/// The result of storing a verified link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Linked.
    Linked,
    /// This account already has a link (`error-link-already`).
    AlreadyLinked,
    /// The MAX account is linked to another account of this diary (`error-link-taken`).
    Taken,
}

impl Stored {
    /// The message id of a conflict.
    pub fn key(self) -> &'static str {
        match self {
            Stored::AlreadyLinked => "error-link-already",
            _ => "error-link-taken",
        }
    }
}

/// A rotated session: the new cookie value and its row.
pub type Rotated = (String, Session);

/// Stores the link of `user` to the verified MAX subject and provisions Сферум (through the outbox).
/// A conflict links nothing, gives the tokens back to MAX, and says which conflict it was. With
/// `rotate`, a made link also gives that browser session a new id in the same transaction (one
/// commit fewer on the link flow) and returns it.
pub async fn store(
    st: &DiaryState,
    user: &User,
    v: &crate::rp::Verified,
    ip: &str,
    rotate: Option<&Session>,
) -> Result<(Stored, Option<Rotated>), StoreError> {
    let now = st.now();
    let refresh_enc = v.refresh_token.as_ref().map(|r| st.cipher.seal("links.refresh", r.as_bytes()));
    let mut tx = st.db.begin().await?;
    let generation = next_generation(&mut tx).await?;
    let inserted = sqlx::query(
        "INSERT INTO links (user_id, issuer, subject, linked_at, refresh_enc, id_token_enc, generation, max_sid) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&user.id)
    .bind(st.rp.issuer())
    .bind(&v.subject)
    .bind(now)
    .bind(&refresh_enc)
    .bind(st.cipher.seal(crate::repo::HINT_CONTEXT, v.id_token.as_bytes()))
    .bind(generation)
    .bind(crate::rp::backchannel::session_of(&v.id_token))
    .execute(&mut tx)
    .await
    .map_err(StoreError::from);
    match inserted {
        Ok(_) => {
            let job = Job::Provision { user_id: user.id.clone(), subject: v.subject.clone(), generation };
            // The link, its audit record and the provisioning job commit together; the job is
            // leased to this request, which delivers it at once.
            let id = outbox::enqueue_claimed(&mut tx, &st.lease, &job, now).await?;
            audit::TRAIL
                .record_in(&mut tx, now, &Record::new(Event::Link).principal(&user.id).subject(&v.subject).ip(ip))
                .await?;
            let rotated = match rotate {
                Some(session) => Some(repo::rotate_session_in(&mut tx, session, now, false).await?),
                None => None,
            };
            tx.commit().await?;
            metrics::counter!("edulink_links_total").increment(1);
            edulink_web::metrics::funnel("callback_accepted");
            // Deliver now so the Сферум page is ready; if MAX is slow or down, the worker retries.
            if let Err(e) = outbox::deliver_claimed(st, &id, &job).await {
                tracing::warn!(error = %e, "immediate provisioning failed; left to the outbox");
            }
            st.outbox_wake.notify_one();
            Ok((Stored::Linked, rotated))
        }
        Err(StoreError::Conflict(constraint)) => {
            drop(tx);
            if let Some(enc) = refresh_enc {
                let mut tx = st.db.begin().await?;
                outbox::enqueue(&mut tx, &Job::Revoke { refresh_enc: enc }, now).await?;
                tx.commit().await?;
                st.outbox_wake.notify_one();
            }
            audit::TRAIL
                .record(
                    &st.db,
                    now,
                    &Record::new(Event::LinkConflict)
                        .principal(&user.id)
                        .subject(&v.subject)
                        .ip(ip)
                        .detail(&constraint),
                )
                .await;
            metrics::counter!("edulink_link_conflicts_total").increment(1);
            edulink_web::metrics::funnel_failure("conflict");
            let conflict =
                if repo::link(&st.db, &user.id).await?.is_some() { Stored::AlreadyLinked } else { Stored::Taken };
            Ok((conflict, None))
        }
        Err(e) => Err(e),
    }
}

/// Who removes a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    /// The account's owner, from a browser or an app at this client address.
    Owner {
        /// The client address.
        ip: &'a str,
    },
    /// An operator, by name, through `edulink admin unlink` or the operator console.
    Operator {
        /// Who (an operator account or the `--operator` / `$USER` of the command line).
        name: &'a str,
    },
}

impl<'a> Actor<'a> {
    /// The audit record's `ip` and `detail` (`operator:<name>` for an operator).
    fn audit(self) -> (Option<&'a str>, Option<String>) {
        match self {
            Actor::Owner { ip } => (Some(ip), None),
            Actor::Operator { name } => (None, Some(format!("operator:{name}"))),
        }
    }
}

/// What [`remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// There was no link.
    NotLinked,
    /// The link is gone and MAX was told at once (profile detached, tokens revoked).
    Told,
    /// The link is gone; MAX could not be told at once, so the outbox keeps the job for its worker.
    Queued,
}

/// Removes the link of `user` for `actor`: pending OIDC transactions of the user (link proofs in
/// flight) die with it, and detaching at Сферум and revoking the tokens at MAX go through the outbox
/// in the same transaction, then are tried at once. The one unlink of the web, the apps' API and the
/// command line.
pub async fn remove(st: &DiaryState, user: &User, actor: Actor<'_>) -> Result<Removed, StoreError> {
    let now = st.now();
    let mut tx = st.db.begin().await?;
    let (ip, detail) = actor.audit();
    let Some(id) = remove_in(&mut tx, &user.id, None, Event::Unlink, ip, detail.as_deref(), now).await? else {
        return Ok(Removed::NotLinked);
    };
    tx.commit().await?;
    metrics::counter!("edulink_unlinks_total").increment(1);
    let told = match outbox::deliver(st, &id).await {
        Ok(told) => told,
        Err(e) => {
            tracing::warn!(error = %e, "immediate detach failed; left to the outbox");
            false
        }
    };
    st.outbox_wake.notify_one();
    Ok(if told { Removed::Told } else { Removed::Queued })
}

/// Removes the link of `user_id` in `tx` — only link `generation`, when given — with the user's
/// pending OIDC transactions (link proofs in flight), the unlink job for MAX and the audit record
/// (`event`, with `ip` and `detail`), so a crash keeps all of them or none. Returns the job's id, or
/// `None` when there was no such link.
pub async fn remove_in(
    tx: &mut edulink_store::Tx,
    user_id: &str,
    generation: Option<i64>,
    event: Event,
    ip: Option<&str>,
    detail: Option<&str>,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let removed: Option<(String, Option<String>, i64)> = sqlx::query_as(
        "DELETE FROM links WHERE user_id = $1 AND ($2 IS NULL OR generation = $2) \
         RETURNING subject, refresh_enc, generation",
    )
    .bind(user_id)
    .bind(generation)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((subject, refresh_enc, generation)) = removed else { return Ok(None) };
    sqlx::query("DELETE FROM oidc_transactions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    let id = outbox::enqueue(tx, &Job::Unlink { subject: subject.clone(), generation, refresh_enc }, now).await?;
    audit::TRAIL
        .record_in(tx, now, &Record::new(event).principal(user_id).subject(&subject).ip_opt(ip).detail_opt(detail))
        .await?;
    Ok(Some(id))
}

/// The next link generation, in the transaction that stores the link (the counter's row is locked
/// until it commits, so generations are unique and grow in commit order).
async fn next_generation(tx: &mut edulink_store::Tx) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("UPDATE link_generations SET value = value + 1 WHERE id = 1 RETURNING value")
        .fetch_one(&mut *tx)
        .await?)
}
