//! MAX's half of the link protocol (docs/architecture.md, «Links across the two parties»): a
//! provision or a detach of a pairwise subject is applied only if its link generation still
//! describes the subject's link ([`edulink_domain::links::Mark`]), and each is one transaction with
//! its token revocation, grant deletion, notification and audit record. Grants that no link ever
//! claimed are revoked a bounded time after the consent ([`sweep_unfinished`]).

use crate::audit::{Event, Record};
use crate::repo::links::{self as marks, SubjectGrant};
use crate::{MaxState, audit, repo};
use edulink_domain::provisioning::{ProvisionProfile, ProvisionResult};
use edulink_store::StoreError;

/// The default of `unfinished_link_secs`: a grant consented to for a link that no link claimed
/// within an hour is revoked (link flows take minutes).
pub const DEFAULT_UNFINISHED_LINK_SECS: i64 = 3600;

/// Who calls: a provisioning client and its sector.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The client.
    pub client_id: &'a str,
    /// Its display name (for notifications).
    pub name: &'a str,
    /// Its sector.
    pub sector: &'a str,
    /// The request's client address.
    pub ip: &'a str,
}

/// What a provision or detach did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Applied.
    Applied(T),
    /// The message describes a link that is no longer the subject's current one: nothing changed.
    Stale,
    /// No grant behind the subject in the caller's sector.
    NoGrant,
}

fn stale<T>(op: &'static str) -> Outcome<T> {
    metrics::counter!("edulink_link_stale_messages_total", "op" => op).increment(1);
    Outcome::Stale
}

/// Attaches the diary's school data for link `generation` of `sub`: the mark, the profile with its
/// chats and lessons, and (on the first attach) the notification and audit record, in one transaction.
pub async fn provision(
    st: &MaxState,
    c: Caller<'_>,
    sub: &str,
    generation: i64,
    p: &ProvisionProfile,
) -> Result<Outcome<ProvisionResult>, StoreError> {
    let now = st.now();
    let mut tx = st.db.begin().await?;
    let mark = marks::lock_mark(&mut tx, c.sector, sub, now).await?;
    if !mark.provision_applies(generation) {
        return Ok(stale("provision"));
    }
    let Some(SubjectGrant { account_id, .. }) =
        marks::grants_of_subject(&mut tx, c.sector, sub).await?.into_iter().next()
    else {
        return Ok(Outcome::NoGrant);
    };
    marks::set_mark(&mut tx, c.sector, sub, generation, marks::Now::Provisioned, now).await?;
    let was_confirmed = edulink_sferum::confirmed_by_in(&mut tx, &account_id).await?;
    let result = edulink_sferum::provision_in(&mut tx, c.client_id, &account_id, p, now).await?;
    if was_confirmed.as_deref() != Some(c.client_id) {
        repo::notify_in(&mut tx, &account_id, "link", c.name, now).await?;
        audit::TRAIL
            .record_in(
                &mut tx,
                now,
                &Record::new(Event::SferumAttached)
                    .principal(&account_id)
                    .subject(sub)
                    .client(c.client_id)
                    .ip(c.ip)
                    .detail(&format!("generation={generation}")),
            )
            .await?;
    }
    tx.commit().await?;
    Ok(Outcome::Applied(result))
}

/// What a detach ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detached {
    /// The account, if a grant was behind the subject.
    pub account: bool,
    /// Tokens revoked.
    pub revoked: u64,
    /// The grant was kept for a newer link under way ([`edulink_domain::links::Mark::grant_awaits_newer_link`]).
    pub kept: bool,
}

/// Removes link `generation` of `sub`: the mark, leaving the chats and dropping the school data,
/// revoking the grant's tokens and deleting it (unless a newer link is under way), the notification
/// and the audit record, in one transaction. A subject with no grant answers as detached.
pub async fn detach(st: &MaxState, c: Caller<'_>, sub: &str, generation: i64) -> Result<Outcome<Detached>, StoreError> {
    let now = st.now();
    let mut tx = st.db.begin().await?;
    let mark = marks::lock_mark(&mut tx, c.sector, sub, now).await?;
    if !mark.detach_applies(generation) {
        return Ok(stale("detach"));
    }
    marks::set_mark(&mut tx, c.sector, sub, generation, marks::Now::Removed, now).await?;
    let grants = marks::grants_of_subject(&mut tx, c.sector, sub).await?;
    let Some(account_id) = grants.first().map(|g| g.account_id.clone()) else {
        tx.commit().await?;
        return Ok(Outcome::Applied(Detached { account: false, revoked: 0, kept: false }));
    };
    drop_school_data(&mut tx, c.client_id, &account_id, now).await?;
    let kept = mark.grant_awaits_newer_link();
    let mut revoked = 0;
    if !kept {
        for g in &grants {
            revoked += marks::end_grant(&mut tx, &g.id, now).await?;
        }
    }
    repo::notify_in(&mut tx, &account_id, "unlink", c.name, now).await?;
    let detail = format!("generation={generation} revoked={revoked}{}", if kept { " grant_kept" } else { "" });
    audit::TRAIL
        .record_in(
            &mut tx,
            now,
            &Record::new(Event::SferumDetached)
                .principal(&account_id)
                .subject(sub)
                .client(c.client_id)
                .ip(c.ip)
                .detail(&detail),
        )
        .await?;
    tx.commit().await?;
    // Open live streams of this account end now (other instances notice within a poll).
    st.hub.publish(crate::hub::Event::Left(account_id.as_str().into()));
    Ok(Outcome::Applied(Detached { account: true, revoked, kept }))
}

/// The profile of `account_id` leaves the chats of diary `client_id` and drops its school data, in
/// `tx`: it falls back to the account's own name (MAX's, read in the same transaction).
async fn drop_school_data(
    tx: &mut edulink_store::Tx,
    client_id: &str,
    account_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    let own: Option<(String, String)> =
        edulink_store::sqlx::query_as("SELECT first_name, last_name FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
    let own = own.map(|(first, last)| edulink_sferum::Name { first, last });
    edulink_sferum::detach_in(tx, own.as_ref(), client_id, account_id, now).await?;
    Ok(())
}

/// Revokes, with their tokens, the link grants that no live link claims and whose last link consent
/// is older than `older_than` seconds (a link callback never finished: abandoned, or interrupted
/// after the code exchange). Each grant goes in a transaction of its own with its audit record.
/// Returns how many went.
pub async fn sweep_unfinished(st: &MaxState, older_than: i64) -> Result<u64, StoreError> {
    let now = st.now();
    let before = now - older_than.max(0);
    let mut swept = 0;
    loop {
        let batch = marks::unfinished(&st.db, before, 100).await?;
        if batch.is_empty() {
            break;
        }
        let mut progressed = false;
        for g in batch {
            let mut tx = st.db.begin().await?;
            let mark = marks::lock_mark(&mut tx, &g.sector, &g.subject, now).await?;
            let still: Option<i64> = edulink_store::sqlx::query_scalar("SELECT consented_at FROM grants WHERE id = $1")
                .bind(&g.id)
                .fetch_optional(&mut tx)
                .await?;
            // A link provisioned, or a consent made, since the listing: not unfinished any more.
            if (!mark.removed && mark.generation >= 0) || still.is_none_or(|t| t >= before) {
                continue;
            }
            let revoked = marks::end_grant(&mut tx, &g.id, now).await?;
            // Nothing of a link is left with it (none should be: no live link claims the grant).
            let confirmed_by: Option<String> = edulink_store::sqlx::query_scalar(
                "SELECT p.confirmed_by FROM sferum_profiles p JOIN clients c ON c.client_id = p.confirmed_by \
                 WHERE p.account_id = $1 AND c.sector = $2",
            )
            .bind(&g.account_id)
            .bind(&g.sector)
            .fetch_optional(&mut tx)
            .await?;
            if let Some(diary) = confirmed_by {
                drop_school_data(&mut tx, &diary, &g.account_id, now).await?;
            }
            audit::TRAIL
                .record_in(
                    &mut tx,
                    now,
                    &Record::new(Event::GrantExpired)
                        .principal(&g.account_id)
                        .subject(&g.subject)
                        .client(&g.client_id)
                        .detail(&format!("revoked={revoked}")),
                )
                .await?;
            tx.commit().await?;
            swept += 1;
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
    if swept > 0 {
        metrics::counter!("edulink_grants_expired_total").increment(swept);
        tracing::info!(grants = swept, "unfinished link grants revoked");
    }
    Ok(swept)
}
