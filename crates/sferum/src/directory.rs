//! What Сферум asks of MAX, its host. Сферум's SQL touches only Сферум's own tables (`sferum_*`);
//! what only MAX knows (an account's name, the pairwise subject a diary knows it by) comes through
//! [`Directory`], which MAX implements over its own tables. Calls are batch-shaped (one per page or
//! API call, never one per row), and pages where every person has a profile make none.

use edulink_store::StoreError;
use std::collections::HashMap;
use std::future::Future;

/// A person's name, as MAX's account has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// First name.
    pub first: String,
    /// Last name.
    pub last: String,
}

impl Name {
    /// «First Last», as chats show it.
    pub fn full(&self) -> String {
        format!("{} {}", self.first, self.last)
    }
}

/// The narrow view of MAX's accounts and links that Сферум needs.
pub trait Directory: Send + Sync {
    /// The names of those of `accounts` that exist; accounts MAX does not have are left out.
    fn names(&self, accounts: &[String]) -> impl Future<Output = Result<HashMap<String, Name>, StoreError>> + Send;

    /// The pairwise subject by which the clients of `sector` know each of `accounts` (the least one
    /// when the account has several grants there); accounts the sector does not know are left out.
    fn subjects_in_sector(
        &self,
        sector: &str,
        accounts: &[String],
    ) -> impl Future<Output = Result<HashMap<String, String>, StoreError>> + Send;
}
