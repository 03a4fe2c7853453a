//! `edulink admin export --login <login>` (152-FZ art. 14: support acting on a parent's written
//! request): one JSON of everything both parties hold about a diary user (format: docs/retention.md,
//! «Export format»). The command runs as the operator of both parties and so reads both databases,
//! each through its own party's export rule; no server needs to run.

use crate::config::Config;
use edulink_domain::SystemClock;
use std::sync::Arc;

use edulink_diary::export::{Export, FORMAT};

/// The export of `login` (`None`: no such user).
pub async fn export(
    diary: &edulink_diary::DiaryState,
    max: &edulink_max::MaxState,
    login: &str,
) -> anyhow::Result<Option<Export<edulink_max::export::MaxPart>>> {
    let Some((user, _)) = edulink_diary::repo::user_by_login(&diary.db, login).await? else { return Ok(None) };
    let Some(d) = edulink_diary::export::diary_part(diary, &user.id).await? else { return Ok(None) };
    let m = match &d.link {
        Some(l) => edulink_max::export::by_subject(max, &diary.cfg.client_id, &l.subject).await?,
        None => None,
    };
    Ok(Some(Export { format: FORMAT, generated_at: diary.now(), diary: d, max: m }))
}

/// The command: prints the JSON (or writes it to `out`).
pub async fn run_cli(cfg: &Config, login: &str, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let max = crate::app::max_state(cfg, Arc::new(SystemClock)).await?;
    let diary = crate::app::diary_state(cfg, Arc::new(SystemClock)).await?;
    let result = export(&diary, &max, login).await;
    diary.db.close().await;
    max.db.close().await;
    let Some(e) = result? else { anyhow::bail!("no diary user {login}") };
    let json = serde_json::to_string_pretty(&e)?;
    match out {
        Some(path) => std::fs::write(path, json + "\n")?,
        None => println!("{json}"),
    }
    Ok(())
}
