//! MAX's demo data: the diary clients (МЭШ and «Моя школа») and the phone `+7 900 000-00-01`, which
//! already has a MAX account with a Сферум profile.

use crate::MaxState;
use crate::oidc::{Client, upsert_client};
use edulink_domain::Phone;
use edulink_store::StoreError;

/// The demo phone that already has a MAX account with a Сферум profile.
pub const DEMO_PHONE: &str = "+79000000001";

/// Creates the demo account and its unconfirmed Сферум profile, once.
pub async fn seed(st: &MaxState) -> Result<bool, StoreError> {
    let phone = Phone::from_e164(DEMO_PHONE).expect("demo phone is valid");
    let hash = st.secrets.phone_hash.keyed_hash("phone", phone.e164());
    if crate::repo::account_by_phone(st.db.pool(), &hash).await?.is_some() {
        return Ok(false);
    }
    let enc = st.secrets.phone_cipher.seal("phone", phone.e164().as_bytes());
    let now = st.now();
    let mut tx = st.db.begin().await?;
    let account = crate::repo::create_account(&mut tx, &hash, &enc, "Алиса", "Иванова", now).await?;
    tx.commit().await?;
    edulink_sferum::ensure_profile(&st.db, &account.id, "Алиса", "Иванова", now).await?;
    Ok(true)
}

/// Registers (or updates) a client.
pub async fn register(st: &MaxState, c: &Client) -> Result<(), StoreError> {
    upsert_client(&st.db, c, st.now()).await?;
    st.clients.forget(&c.client_id);
    Ok(())
}
