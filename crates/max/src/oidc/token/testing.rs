//! A provider on the shared migrated test database ([`crate::test_db`]), with one confidential client
//! and one account, for the grants' unit tests.

use super::authorization_code::CodeExchange;
use crate::oidc::{AuthRequest, Client, issue_code, upsert_client};
use crate::{MaxConfig, MaxState};
use edulink_domain::crypto::sha256_b64;
use edulink_domain::oauth::pkce_s256;
use edulink_domain::{ManualClock, SecretKey};
use edulink_sms::{DevInbox, SmsGateway};
use edulink_store::sqlx;
use std::sync::Arc;

/// The PKCE verifier of every test code.
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

const REDIRECT: &str = "https://diary.test/cb";

/// A provider state with a client (`diary`) and an account (`a1`).
pub struct Fixture {
    pub st: MaxState,
    pub clock: Arc<ManualClock>,
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// The confidential test client.
    pub fn client() -> Client {
        Client {
            client_id: "diary".into(),
            name: "Дневник".into(),
            secret_hash: Some(sha256_b64("secret")),
            redirect_uris: vec![REDIRECT.into()],
            id_token_alg: "EdDSA".into(),
            sector: "diary.test".into(),
            scopes: ["openid", "profile", "offline_access", "sferum.provision"].map(String::from).to_vec(),
            policy: Default::default(),
        }
    }

    /// A fresh provider.
    pub async fn new() -> Self {
        let (db, dir) = crate::test_db().await;
        let clock = Arc::new(ManualClock::default());
        let cfg = MaxConfig::new("https://max.test".into(), SecretKey::generate());
        let st = MaxState::new(db, cfg, SmsGateway::Dev(DevInbox::default()), clock.clone()).await.unwrap();
        let client = Self::client();
        upsert_client(&st.db, &client, st.now()).await.unwrap();
        st.db
            .execute(sqlx::query(
                "INSERT INTO accounts (id, phone_hash, phone_enc, first_name, last_name, created_at) \
                 VALUES ('a1', 'h', 'e', 'Вера', 'Кузнецова', 0)",
            ))
            .await
            .unwrap();
        Fixture { st, clock, client, _dir: dir }
    }

    /// A code for `a1` with `scope`, PKCE-bound to [`VERIFIER`], nonce `n-1`.
    pub async fn code(&self, scope: &str) -> String {
        let req = AuthRequest {
            id: "r1".into(),
            client_id: self.client.client_id.clone(),
            redirect_uri: REDIRECT.into(),
            scope: scope.into(),
            state: None,
            nonce: Some("n-1".into()),
            code_challenge: pkce_s256(VERIFIER),
            hint_account_id: None,
            consent: false,
            max_age: None,
            stored: false,
            dpop_jkt: None,
        };
        let url = url::Url::parse(&issue_code(&self.st, &req, "a1", self.st.now(), None, None).await.unwrap()).unwrap();
        url.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned()
    }

    /// The exchange of `code` with `verifier` at the registered redirect URI.
    pub fn exchange(&self, code: &str, verifier: &str) -> CodeExchange {
        CodeExchange { code: code.into(), redirect_uri: REDIRECT.into(), verifier: verifier.into() }
    }

    /// The details of the audit records of `event`.
    pub async fn audited(&self, event: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT detail FROM audit WHERE event = $1")
            .bind(event)
            .fetch_all(self.st.db.pool())
            .await
            .unwrap()
    }
}
