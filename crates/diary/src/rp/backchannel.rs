//! The diary's back-channel logout endpoint (OpenID Connect Back-Channel Logout 1.0 §2.5–§2.8):
//! MAX posts a logout token when a MAX session ends (or a MAX account is deleted), and the diary
//! ends its Сферум state for that person.
//!
//! The token is validated as §2.6 requires, each failure a 400 with a JSON `error` (§2.8) and an
//! audit record naming the check: a compact JWS whose `alg` is one MAX signs with (never `none`,
//! never a MAC), explicitly typed `logout+jwt` when typed at all, signed by a key of MAX's JWKS
//! (re-fetched once for an unknown key); `iss` is MAX; `aud` holds the diary's client id; `iat` is
//! at most [`MAX_AGE`] old and not in the future beyond [`SKEW`], `exp` not passed; `jti` not seen
//! before (kept in `logout_jtis` until the token expires); `events` holds the back-channel logout
//! event; there is no `nonce`; `sub` or `sid` is present. Success is 200, `Cache-Control: no-store`.
//!
//! What ends: the diary's Сферум state is the link's silent sign-in — the «Сферум» button sends the
//! stored ID token as `id_token_hint` and MAX answers at once while its session lives. The link is
//! marked logged out (`links.logged_out_at`), so the next «Сферум» asks MAX for `prompt=login`
//! (`RelyingParty::start`): a fresh sign-in at MAX, whatever MAX session the browser may have; the
//! hint is still sent, so MAX still says when somebody else signs in. Sign-ins already in flight
//! are left to finish (the logout token may arrive after the person started the fresh one). The
//! link stays (a logout is not an unlink) and the next successful sign-in clears the mark.
//!
//! The diary has one Сферум state per link, whichever MAX session it came from, so a token naming
//! the subject ends it whatever its `sid` (MAX gives a session a new `sid` when it re-authenticates
//! it); a token naming only `sid` ends the state of the link whose stored ID token is of that
//! session (`links.max_sid`).

use crate::audit::{Event, Record};
use crate::{DiaryState, audit};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use edulink_store::{StoreError, Tx, sqlx};
use edulink_web::ClientIp;
use openidconnect::JsonWebKey;
use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use serde_json::Value;

/// The `events` member of a logout token (§2.4).
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token issued longer ago than this is refused (§2.6 step 7: "not too far in the past").
pub const MAX_AGE: i64 = 300;
/// Clock difference tolerated between MAX and the diary.
pub const SKEW: i64 = 60;

/// Why a logout token was refused (the audit detail and the `error_description`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a form with one `logout_token`, or not a compact JWS with JSON parts.
    Malformed,
    /// `typ` is not `logout+jwt`.
    Typ,
    /// `alg` is not one MAX signs with.
    Alg,
    /// No key of MAX's JWKS verifies the signature.
    Signature,
    /// `iss` is not MAX.
    Issuer,
    /// `aud` does not hold the diary's client id.
    Audience,
    /// `iat` missing, too old or in the future.
    IssuedAt,
    /// `exp` missing or passed.
    Expired,
    /// `jti` missing.
    NoJti,
    /// `jti` seen before.
    Replay,
    /// `events` lacks the back-channel logout event.
    Events,
    /// A `nonce` is present (§2.4: prohibited, so an ID token cannot pass as a logout token).
    Nonce,
    /// Neither `sub` nor `sid`.
    NoSubject,
}

impl Refused {
    /// The stored and reported name.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Malformed => "malformed",
            Refused::Typ => "typ",
            Refused::Alg => "alg",
            Refused::Signature => "signature",
            Refused::Issuer => "iss",
            Refused::Audience => "aud",
            Refused::IssuedAt => "iat",
            Refused::Expired => "exp",
            Refused::NoJti => "jti",
            Refused::Replay => "jti_replay",
            Refused::Events => "events",
            Refused::Nonce => "nonce",
            Refused::NoSubject => "sub_or_sid",
        }
    }
}

/// The accepted claims of a logout token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    /// The subject whose sessions end.
    pub sub: Option<String>,
    /// The MAX session that ended.
    pub sid: Option<String>,
    /// The token's id.
    pub jti: String,
    /// Until when its `jti` is remembered.
    pub keep_until: i64,
}

/// A compact JWS split into its parts: the header and claims as JSON, the signing input and the
/// signature.
struct Jws {
    header: Value,
    claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

fn split(token: &str) -> Result<Jws, Refused> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Refused::Malformed);
    };
    let json = |p: &str| -> Result<Value, Refused> {
        serde_json::from_slice(&B64.decode(p).map_err(|_| Refused::Malformed)?).map_err(|_| Refused::Malformed)
    };
    Ok(Jws {
        header: json(h)?,
        claims: json(c)?,
        signing_input: format!("{h}.{c}"),
        signature: B64.decode(s).map_err(|_| Refused::Malformed)?,
    })
}

/// The algorithm of a header MAX may have signed with (`none` and MACs never are).
fn algorithm(header: &Value) -> Result<CoreJwsSigningAlgorithm, Refused> {
    match header["alg"].as_str() {
        Some("RS256") => Ok(CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256),
        Some("ES256") => Ok(CoreJwsSigningAlgorithm::EcdsaP256Sha256),
        Some("EdDSA") => Ok(CoreJwsSigningAlgorithm::EdDsa),
        _ => Err(Refused::Alg),
    }
}

/// Checks the header (`typ`, `alg`) and the signature against `jwks`. `Ok(None)` when no key has
/// the token's `kid` (the caller re-fetches the JWKS once).
fn verify_signature(jws: &Jws, jwks: &CoreJsonWebKeySet) -> Result<Option<()>, Refused> {
    if let Some(typ) = jws.header.get("typ") {
        let typ = typ.as_str().unwrap_or("").to_ascii_lowercase();
        if typ != "logout+jwt" && typ != "application/logout+jwt" {
            return Err(Refused::Typ);
        }
    }
    let alg = algorithm(&jws.header)?;
    let kid = jws.header["kid"].as_str();
    let mut candidates =
        jwks.keys().iter().filter(|k| kid.is_none_or(|kid| k.key_id().is_some_and(|id| id.as_str() == kid))).peekable();
    if candidates.peek().is_none() {
        return Ok(None);
    }
    if candidates.any(|k| k.verify_signature(&alg, jws.signing_input.as_bytes(), &jws.signature).is_ok()) {
        Ok(Some(()))
    } else {
        Err(Refused::Signature)
    }
}

/// Checks the claims of a logout token whose signature verified (§2.6 steps 3–7).
pub fn check_claims(c: &Value, issuer: &str, client_id: &str, now: i64) -> Result<LogoutClaims, Refused> {
    if c["iss"].as_str() != Some(issuer) {
        return Err(Refused::Issuer);
    }
    let aud_ok = match &c["aud"] {
        Value::String(a) => a == client_id,
        Value::Array(v) => v.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err(Refused::Audience);
    }
    let iat = c["iat"].as_i64().ok_or(Refused::IssuedAt)?;
    if iat > now + SKEW || iat < now - MAX_AGE {
        return Err(Refused::IssuedAt);
    }
    let exp = c["exp"].as_i64().ok_or(Refused::Expired)?;
    if exp + SKEW < now {
        return Err(Refused::Expired);
    }
    let jti = c["jti"].as_str().filter(|j| !j.is_empty() && j.len() <= 256).ok_or(Refused::NoJti)?;
    if !c["events"].get(BACKCHANNEL_EVENT).is_some_and(Value::is_object) {
        return Err(Refused::Events);
    }
    if c.get("nonce").is_some() {
        return Err(Refused::Nonce);
    }
    let text = |k: &str| c[k].as_str().filter(|v| !v.is_empty()).map(str::to_owned);
    let (sub, sid) = (text("sub"), text("sid"));
    if sub.is_none() && sid.is_none() {
        return Err(Refused::NoSubject);
    }
    Ok(LogoutClaims { sub, sid, jti: jti.to_owned(), keep_until: exp.max(iat + MAX_AGE) + SKEW })
}

/// Validates a logout token: signature with MAX's JWKS (re-fetched once for an unknown key), then
/// the claims.
pub async fn validate(st: &DiaryState, token: &str) -> Result<LogoutClaims, Refused> {
    let jws = split(token)?;
    let cached = st.rp.jwks(false).await.map_err(|_| Refused::Signature)?;
    if verify_signature(&jws, &cached)?.is_none() {
        // Perhaps a key MAX made since: fetch the JWKS again, once.
        let fresh = st.rp.jwks(true).await.map_err(|_| Refused::Signature)?;
        verify_signature(&jws, &fresh)?.ok_or(Refused::Signature)?;
    }
    check_claims(&jws.claims, st.rp.issuer(), &st.cfg.client_id, st.now())
}

/// Remembers `jti` until `keep_until`; false if it was seen before.
async fn first_use(tx: &mut Tx, jti: &str, keep_until: i64, now: i64) -> Result<bool, StoreError> {
    sqlx::query("DELETE FROM logout_jtis WHERE expires_at < $1").bind(now).execute(&mut *tx).await?;
    let done = sqlx::query("INSERT INTO logout_jtis (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
        .bind(jti)
        .bind(keep_until)
        .execute(&mut *tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends the Сферум state the token names (see the module docs). Returns the users whose state ended.
async fn end_sferum_state(tx: &mut Tx, issuer: &str, c: &LogoutClaims, now: i64) -> Result<Vec<String>, StoreError> {
    const MARK: &str = "UPDATE links SET logged_out_at = $1, max_sid = NULL WHERE issuer = $2";
    let users: Vec<String> = match (&c.sub, &c.sid) {
        (Some(sub), _) => {
            let sql = format!("{MARK} AND subject = $3 RETURNING user_id");
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(now).bind(issuer).bind(sub).fetch_all(&mut *tx).await?
        }
        (None, Some(sid)) => {
            let sql = format!("{MARK} AND max_sid = $3 RETURNING user_id");
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(now).bind(issuer).bind(sid).fetch_all(&mut *tx).await?
        }
        (None, None) => Vec::new(),
    };
    Ok(users)
}

/// Accepts a validated logout token: refuses a replayed `jti`, ends the Сферум state and audits
/// it, in one transaction.
pub async fn accept(st: &DiaryState, c: &LogoutClaims, ip: &str) -> Result<Result<usize, Refused>, StoreError> {
    let now = st.now();
    let mut tx = st.db.begin().await?;
    if !first_use(&mut tx, &c.jti, c.keep_until, now).await? {
        tx.rollback().await?;
        return Ok(Err(Refused::Replay));
    }
    let users = end_sferum_state(&mut tx, st.rp.issuer(), c, now).await?;
    let detail = if c.sid.is_some() { "sid" } else { "sub" };
    for user in &users {
        let mut r = Record::new(Event::BackchannelLogout).principal(user).ip(ip).detail(detail);
        if let Some(sub) = &c.sub {
            r = r.subject(sub);
        }
        audit::TRAIL.record_in(&mut tx, now, &r).await?;
    }
    tx.commit().await?;
    metrics::counter!("edulink_backchannel_logout_received_total", "result" => "accepted").increment(1);
    Ok(Ok(users.len()))
}

fn no_store(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status != StatusCode::OK {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    resp
}

/// `POST /oidc/backchannel-logout` (§2.5): the form parameter `logout_token`.
pub async fn receive(
    State(st): State<DiaryState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: String,
) -> Response {
    let ip = ip.to_string();
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    #[derive(serde::Deserialize)]
    struct Form {
        logout_token: String,
    }
    let outcome = match edulink_web::forms::parse_strict::<Form>(&body) {
        Ok(f) if form => match validate(&st, &f.logout_token).await {
            Ok(claims) => accept(&st, &claims, &ip).await,
            Err(why) => Ok(Err(why)),
        },
        _ => Ok(Err(Refused::Malformed)),
    };
    match outcome {
        Ok(Ok(_)) => no_store(StatusCode::OK, String::new()),
        Ok(Err(why)) => {
            metrics::counter!("edulink_backchannel_logout_received_total", "result" => why.as_str()).increment(1);
            tracing::warn!(reason = why.as_str(), "logout token refused");
            let r = Record::new(Event::BackchannelRefused).ip(&ip).detail(why.as_str());
            audit::TRAIL.record(&st.db, st.now(), &r).await;
            let body = serde_json::json!({ "error": "invalid_request", "error_description": why.as_str() });
            no_store(StatusCode::BAD_REQUEST, body.to_string())
        }
        Err(e) => {
            // §2.8: a failure the RP could not finish is not a 200; the OP retries.
            tracing::error!(error = %e, "logout token not processed");
            let body = serde_json::json!({ "error": "temporarily_unavailable" });
            no_store(StatusCode::SERVICE_UNAVAILABLE, body.to_string())
        }
    }
}

/// The `sid` of a stored ID token (read without checking its signature again: it was validated
/// when it was stored).
pub fn session_of(id_token: &str) -> Option<String> {
    let claims = id_token.split('.').nth(1)?;
    let v: Value = serde_json::from_slice(&B64.decode(claims).ok()?).ok()?;
    Some(v.get("sid")?.as_str()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://max.example";

    fn good(now: i64) -> Value {
        json!({
            "iss": ISS, "aud": "mesh", "iat": now, "exp": now + 120, "jti": "j-1",
            "sub": "s-1", "sid": "x-1", "events": { BACKCHANNEL_EVENT: {} },
        })
    }

    /// OpenID Connect Back-Channel Logout 1.0 §2.6, one rule per case.
    #[test]
    fn claims_are_checked_as_the_spec_requires() {
        let now = 10_000;
        let ok = check_claims(&good(now), ISS, "mesh", now).unwrap();
        assert_eq!((ok.sub.as_deref(), ok.sid.as_deref()), (Some("s-1"), Some("x-1")));
        let cases: Vec<(&str, Value, Refused)> = vec![
            ("iss", json!("https://evil.example"), Refused::Issuer),
            ("aud", json!("other"), Refused::Audience),
            ("aud", json!(["other", "another"]), Refused::Audience),
            ("iat", json!(now + SKEW + 1), Refused::IssuedAt),
            ("iat", json!(now - MAX_AGE - 1), Refused::IssuedAt),
            ("exp", json!(now - SKEW - 1), Refused::Expired),
            ("jti", Value::Null, Refused::NoJti),
            ("events", json!({}), Refused::Events),
            ("events", json!({ BACKCHANNEL_EVENT: "yes" }), Refused::Events),
            ("nonce", json!("n"), Refused::Nonce),
        ];
        for (k, v, want) in cases {
            let mut c = good(now);
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
            assert_eq!(check_claims(&c, ISS, "mesh", now), Err(want), "{k} = {v}");
        }
        let mut c = good(now);
        c.as_object_mut().unwrap().remove("sub");
        c.as_object_mut().unwrap().remove("sid");
        assert_eq!(check_claims(&c, ISS, "mesh", now), Err(Refused::NoSubject));
        c["aud"] = json!(["other", "mesh"]);
        c["sid"] = json!("x-2");
        assert!(check_claims(&c, ISS, "mesh", now).is_ok(), "sid alone, mesh among the audiences");
    }

    #[test]
    fn none_and_mac_algorithms_are_refused() {
        for alg in ["none", "HS256", "RS512", "ES384"] {
            assert_eq!(algorithm(&json!({ "alg": alg })), Err(Refused::Alg), "{alg}");
        }
    }
}
