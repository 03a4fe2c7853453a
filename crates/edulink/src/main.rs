//! `edulink`: one binary for both parties.

use clap::{Parser, Subcommand};
use edulink::app::{self, Overrides, Role};
use edulink::config::{Config, Scope};
use edulink_domain::{SecretKey, SystemClock};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "edulink", version, about = "МЭШ diary ↔ Сферум in MAX: linking, sign-in and unlinking")]
struct Cli {
    /// Configuration file (TOML). Default: ./edulink.toml if present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory for SQLite files and generated dev secrets.
    #[arg(long, global = true, env = "EDULINK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the parties (both by default).
    Serve {
        /// Which party to run.
        #[arg(long, value_enum, default_value = "both")]
        role: Role,
    },
    /// Apply database migrations of both parties and exit.
    Migrate,
    /// Demo data.
    Demo {
        #[command(subcommand)]
        what: DemoCmd,
    },
    /// Signing keys of MAX.
    Keys {
        #[command(subcommand)]
        what: KeysCmd,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        what: ConfigCmd,
    },
    /// MAX administration.
    Max {
        #[command(subcommand)]
        what: MaxCmd,
    },
    /// Support tasks: find a link, unlink, read the audit trail.
    Admin {
        #[command(subcommand)]
        what: AdminCmd,
    },
    /// Delete what has outlived its retention period in both parties' databases (docs/retention.md).
    Janitor {
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy both SQLite databases, as they were at one instant, into a new directory (with
    /// `manifest.json`); a running server goes on, its writes paused only for the instant.
    Backup {
        /// The backup directory (created; refused if it holds a backup).
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a backup's databases in place of the configured SQLite files (servers stopped).
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// Replace the files even though a running instance seems to have them open.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum DemoCmd {
    /// Seed the demo school and the demo MAX account (idempotent).
    Seed,
    /// Play the diary's mobile app: link a diary login to Сферум through the JSON APIs.
    MobileLink {
        /// Diary login.
        #[arg(long)]
        login: String,
        /// Diary password.
        #[arg(long, default_value = "demo")]
        password: String,
        /// Which app: dnevnik_mesh («Дневник МЭШ») or moyashkola («Моя школа Дневник»).
        #[arg(long, default_value = "dnevnik_mesh")]
        app: String,
        /// The diary's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        diary: String,
        /// MAX's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        max: String,
        /// Also play the MAX app with this phone (otherwise: open the printed URL yourself).
        #[arg(long)]
        phone: Option<String>,
        /// With --phone: read the code from MAX's dev inbox.
        #[arg(long)]
        auto_code: bool,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create new signing keys; the previous ones sign until the new ones are published everywhere
    /// and stay published for the retention period (docs/deployment.md, «Keys and secrets»).
    Rotate,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate the configuration and print it with secrets hidden.
    Check {
        /// Check what this party needs (a MAX-only deployment has no diary secrets).
        #[arg(long, value_enum, default_value = "both")]
        role: Role,
    },
}

#[derive(Subcommand)]
enum MaxCmd {
    /// Client registrations.
    Client {
        #[command(subcommand)]
        what: ClientCmd,
    },
    /// Revoke, with their tokens, link grants no link claimed within `max.unfinished_link_secs`
    /// (unfinished link callbacks; a running MAX does this every minute).
    SweepGrants,
}

#[derive(Subcommand)]
enum ClientCmd {
    /// Register (or replace) a client; prints its secret once.
    Add {
        /// client_id.
        #[arg(long)]
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Redirect URI (repeatable).
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// ID token algorithm: RS256, ES256 or EdDSA.
        #[arg(long, default_value = "RS256")]
        alg: String,
        /// A public client (mobile app): no secret, PKCE only.
        #[arg(long)]
        public: bool,
        /// May call the Сферум provisioning API.
        #[arg(long)]
        provisioning: bool,
        /// May ask for the `phone` scope (the person's phone number, with their consent).
        #[arg(long)]
        phone: bool,
        /// Where MAX may send the browser after a logout (repeatable; matched exactly).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// Where MAX posts logout tokens (OpenID Connect Back-Channel Logout 1.0).
        #[arg(long)]
        backchannel_logout_uri: Option<String>,
        /// The client needs `sid` in every logout token.
        #[arg(long)]
        backchannel_logout_session_required: bool,
        /// Its tokens must be DPoP-bound (RFC 9449 §5.2; the diary's apps).
        #[arg(long)]
        dpop: bool,
        /// It must push its authorization requests (RFC 9126 §6; the diary's apps).
        #[arg(long)]
        par: bool,
    },
    /// Make a new secret for a confidential client and print it once; the previous secret stays
    /// valid for `max.client_secret_grace_secs` (redeploy the client with the new one meanwhile).
    RotateSecret {
        /// client_id.
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Show the link of a diary login.
    Link {
        /// Diary login.
        #[arg(long)]
        login: String,
    },
    /// Everything both parties hold about a diary login, as one JSON (docs/retention.md).
    Export {
        /// Diary login.
        #[arg(long)]
        login: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Unlink a diary login (detaching and revocation go through the outbox).
    Unlink {
        /// Diary login.
        #[arg(long)]
        login: String,
        /// Who runs the command, for the audit trail (default: $USER, else `cli`).
        #[arg(long, env = "USER")]
        operator: Option<String>,
    },
    /// One student's journey across both parties' audit trails, in local time: each step, its
    /// outcome, and for a refusal the reason and what to do.
    Trace {
        /// Diary login.
        #[arg(long)]
        login: String,
        /// From when: a duration back (90m, 6h, 7d) or a date (2026-12-01). Default: all.
        #[arg(long)]
        since: Option<String>,
    },
    /// The newest audit records of the diary (local time); one student's journey: `admin trace`.
    Audit {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Compare the diary's links with MAX's grants and repair every difference (a running diary
    /// does this every `diary.reconcile_interval_secs`).
    Reconcile,
    /// The outbox: waiting jobs, and jobs MAX refused (an alert fires while there are any).
    Outbox {
        /// Make this refused job due again.
        #[arg(long)]
        retry: Option<String>,
        /// Make every refused job due again.
        #[arg(long, conflicts_with = "retry")]
        retry_all: bool,
    },
}

fn init_logs() {
    // Commands other than `serve` log only; an exporter is for the servers' request spans.
    let _ = edulink::telemetry::init(None);
}

fn main() -> anyhow::Result<()> {
    // Allocations of 1 MiB and more (Argon2id's 19 MiB per password check) go to mmap and back to
    // the OS when freed, instead of staying in glibc's arenas: idle RSS stays small after logins.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation policy; it is thread-safe and has no
    // preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let mut cli = Cli::parse();
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(d) = cli.data_dir.take() {
        cfg.data_dir = d;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads())
        .enable_all()
        .build()?
        .block_on(run(cli, cfg))
}

async fn run(cli: Cli, cfg: Config) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { role } => {
            // Validated (`ops.otlp_endpoint` among the rest) before the exporter starts.
            let cfg = cfg.prepare(role.scope())?;
            let _telemetry = edulink::telemetry::init(cfg.ops.otlp_endpoint.as_deref())?;
            edulink_web::ops::prometheus();
            let signals = app::Signals::install()?;
            let running = app::start(cfg.clone(), role, Arc::new(SystemClock), Overrides::default()).await?;
            println!("edulink is running ({:?} mode)", cfg.mode);
            if role != Role::Max {
                println!("  Diary (МЭШ):      {}/", running.diary_url);
            }
            if role != Role::Diary {
                println!("  MAX with Сферум:  {}/", running.max_url);
                if running.inbox.is_some() {
                    println!("  SMS inbox (dev):  {}/dev/inbox   JSON: {}/dev/sms", running.max_url, running.max_url);
                }
            }
            if let Some(ops) = &running.ops_url {
                println!("  Metrics (ops):    {ops}/metrics");
            }
            if cfg.demo() && role != Role::Max {
                println!("  Demo logins:      student1 … student10, teacher — password «demo»");
                println!("  Phone with an existing Сферум profile: +7 900 000-00-01");
            }
            running.wait_for_signal(signals).await;
        }
        Command::Migrate => {
            init_logs();
            // The databases only: production bootstrap migrates before any client secret exists.
            let cfg = cfg.prepare(Scope::Databases)?;
            app::max_db(&cfg).await?.close().await;
            app::diary_db(&cfg).await?.close().await;
            println!("migrations applied");
        }
        Command::Demo { what: DemoCmd::MobileLink { login, password, app, diary, max, phone, auto_code } } => {
            let opts = edulink::mobile::MobileLink { diary, max, login, password, app, phone, auto_code };
            let stdin = std::io::stdin();
            edulink::mobile::run(&opts, &mut stdin.lock(), &mut std::io::stdout()).await?;
        }
        Command::Demo { what: DemoCmd::Seed } => {
            let cfg = cfg.prepare(Scope::Both)?;
            let db = app::diary_db(&cfg).await?;
            let seeded = edulink_diary::demo::seed(&db, Default::default(), SystemClock.now_secs()).await?;
            let mdb = app::max_db(&cfg).await?;
            let st = edulink_max::MaxState::new(
                mdb,
                app::max_config(&cfg, cfg.max_url())?,
                edulink_sms::SmsGateway::Dev(Default::default()),
                Arc::new(SystemClock),
            )
            .await?;
            let seeded_max = edulink_max::demo::seed(&st).await?;
            println!(
                "diary demo: {}; MAX demo account: {}",
                if seeded { "seeded" } else { "already there" },
                if seeded_max { "seeded" } else { "already there" }
            );
        }
        Command::Keys { what: KeysCmd::Rotate } => {
            let cfg = cfg.prepare(Scope::MaxKeys)?;
            let db = app::max_db(&cfg).await?;
            let secret = SecretKey::from_base64(cfg.max.secret.as_deref().unwrap_or_default())?;
            let cipher = edulink_domain::Cipher::new(&secret.derive(edulink_max::SIGNING_KEYS_LABEL));
            let retention = edulink_max::keys::retention_secs(&app::max_config(&cfg, cfg.max_url())?);
            let r = edulink_max::keys::rotate(&db, &cipher, SystemClock.now_secs(), retention).await?;
            println!(
                "new signing keys: {} (published within seconds, signing in {} s)",
                r.kids.join(", "),
                edulink_max::keys::ACTIVATION_DELAY_SECS
            );
            println!("keys retired over {} days ago deleted: {}", retention / 86_400, r.deleted);
        }
        Command::Config { what: ConfigCmd::Check { role } } => {
            cfg.check_for(role.scope())?;
            let mut shown = cfg.clone();
            for s in [
                &mut shown.diary.secret,
                &mut shown.max.secret,
                &mut shown.diary.client_secret,
                &mut shown.max.sms.token,
            ] {
                if s.is_some() {
                    *s = Some("<hidden>".into());
                }
            }
            println!("configuration is valid:\n{}", serde_json::to_string_pretty(&shown)?);
        }
        Command::Max {
            what:
                MaxCmd::Client {
                    what:
                        ClientCmd::Add {
                            id,
                            name,
                            redirect_uris,
                            alg,
                            public,
                            provisioning,
                            phone,
                            post_logout_redirect_uris,
                            backchannel_logout_uri,
                            backchannel_logout_session_required,
                            dpop,
                            par,
                        },
                },
        } => {
            for u in post_logout_redirect_uris.iter().chain(&backchannel_logout_uri) {
                url::Url::parse(u).map_err(|e| anyhow::anyhow!("{u}: {e}"))?;
            }
            if !edulink_max::keys::ALGS.contains(&alg.as_str()) {
                anyhow::bail!("alg must be one of {:?}", edulink_max::keys::ALGS);
            }
            // MAX's database only: the secret printed here is what the diary's configuration lacks.
            let cfg = cfg.prepare(Scope::Databases)?;
            let db = app::max_db(&cfg).await?;
            let secret = (!public).then(|| edulink_domain::crypto::random_token(32));
            let mut scopes = vec!["openid".to_string(), "profile".into(), "offline_access".into()];
            if provisioning {
                scopes.push("sferum.provision".into());
            }
            if phone {
                scopes.push("phone".into());
            }
            let client = edulink_max::oidc::Client {
                client_id: id.clone(),
                name,
                secret_hash: secret.as_deref().map(edulink_domain::crypto::sha256_b64),
                redirect_uris,
                id_token_alg: alg,
                sector: id.clone(),
                scopes,
                policy: edulink_max::oidc::ClientPolicy {
                    dpop_bound_access_tokens: dpop,
                    require_pushed_authorization_requests: par,
                },
            };
            edulink_max::oidc::upsert_client(&db, &client, SystemClock.now_secs()).await?;
            let logout = edulink_max::repo::logout::LogoutRegistration {
                post_logout_redirect_uris,
                backchannel_logout_uri,
                backchannel_logout_session_required,
            };
            edulink_max::repo::logout::upsert_logout(&db, &id, &logout).await?;
            println!("client {id} registered");
            if let Some(s) = secret {
                println!("client_secret (shown once): {s}");
            }
        }
        Command::Janitor { dry_run } => {
            let cfg = cfg.prepare(Scope::Both)?;
            edulink::janitor::run_cli(&cfg, dry_run).await?;
        }
        Command::Backup { to } => {
            let m = edulink::backup::backup(&cfg, &to).await?;
            println!(
                "backup written to {} (writes paused {} ms, copied in {} ms)",
                to.display(),
                m.pause_ms,
                m.copy_ms
            );
            for d in &m.databases {
                println!("  {}: schema {}, {} bytes, sha256 {}", d.file, d.schema_version, d.bytes, d.sha256);
            }
        }
        Command::Restore { from, force } => {
            let m = edulink::backup::restore(&cfg, &from, force)?;
            println!("restored the backup of {} (unix) from {}", m.created_at, from.display());
        }
        Command::Max { what: MaxCmd::SweepGrants } => {
            let cfg = cfg.prepare(Scope::Max)?;
            let st = edulink_max::MaxState::new(
                app::max_db(&cfg).await?,
                app::max_config(&cfg, cfg.max_url())?,
                edulink_sms::SmsGateway::Dev(Default::default()),
                Arc::new(SystemClock),
            )
            .await?;
            let swept = edulink_max::links::sweep_unfinished(&st, st.cfg.unfinished_link_secs).await;
            st.db.close().await;
            println!("unfinished link grants revoked: {}", swept?);
        }
        Command::Max { what: MaxCmd::Client { what: ClientCmd::RotateSecret { id } } } => {
            // MAX's database only, like `max client add`.
            let cfg = cfg.prepare(Scope::Databases)?;
            let db = app::max_db(&cfg).await?;
            let grace = cfg.max.client_secret_grace_secs;
            let Some(secret) = edulink_max::oidc::rotate_secret(&db, &id, SystemClock.now_secs(), grace).await? else {
                anyhow::bail!("no confidential client {id}");
            };
            println!("client_secret (shown once): {secret}");
            println!("the previous secret stays valid for {grace} s; new secrets work on every instance at once");
        }
        Command::Admin { what: AdminCmd::Trace { login, since } } => {
            // Both parties' databases: each is read through its own party's query.
            let cfg = cfg.prepare(Scope::Databases)?;
            let now = SystemClock.now_secs();
            let since = since
                .as_deref()
                .map(|s| edulink::support::parse_since(s, now))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let ddb = app::diary_db(&cfg).await?;
            let mdb = app::max_db(&cfg).await?;
            let result = trace(&ddb, &mdb, &login, since.unwrap_or(0)).await;
            ddb.close().await;
            mdb.close().await;
            print!("{}", result?);
        }
        Command::Admin { what: AdminCmd::Export { login, out } } => {
            // Both parties' databases: the operator of both answers a parent's request.
            let cfg = cfg.prepare(Scope::Both)?;
            edulink::export::run_cli(&cfg, &login, out.as_deref()).await?;
        }
        Command::Admin { what } => {
            let cfg = cfg.prepare(Scope::Diary)?;
            let st = app::diary_state(&cfg, Arc::new(SystemClock)).await?;
            let result = admin(&st, what).await;
            st.db.close().await;
            result?;
        }
    }
    Ok(())
}

/// Support's commands, on the diary's state (no server needs to run).
async fn admin(st: &edulink_diary::DiaryState, what: AdminCmd) -> anyhow::Result<()> {
    use edulink_diary::links::{self, Actor, Removed};
    use edulink_diary::{audit, repo};
    match what {
        AdminCmd::Link { login } => {
            let user = repo::user_by_login(&st.db, &login).await?.map(|(u, _)| u);
            let link = match &user {
                Some(u) => repo::link(&st.db, &u.id).await?,
                None => None,
            };
            match (user, link) {
                (None, _) => anyhow::bail!("{login}: no such diary login"),
                (Some(_), Some(l)) => println!(
                    "{login}: linked to {} at {} since {}",
                    l.subject,
                    l.issuer,
                    edulink::support::local_time(l.linked_at)
                ),
                (Some(_), None) => println!("{login}: not linked"),
            }
        }
        AdminCmd::Export { .. } => anyhow::bail!("export reads both parties' databases: run from main"),
        AdminCmd::Unlink { login, operator } => {
            // The unlink of the web and the apps: MAX is told at once when it answers.
            let Some((user, _)) = repo::user_by_login(&st.db, &login).await? else {
                anyhow::bail!("{login}: no such diary login");
            };
            let operator = operator.filter(|o| !o.trim().is_empty()).unwrap_or_else(|| "cli".into());
            let removed = links::remove(st, &user, Actor::Operator { name: &operator }).await?;
            let said = match removed {
                Removed::NotLinked => "was not linked",
                Removed::Told => "unlinked (MAX was told)",
                Removed::Queued => "unlinked (MAX could not be told now: a running diary's outbox will tell it)",
            };
            println!("{login}: {said}");
        }
        AdminCmd::Reconcile => {
            let r = edulink_diary::reconcile::run(st).await?;
            println!("subjects compared: {}", r.checked);
            for (what, subjects) in [
                ("provisioned again", &r.reprovisioned),
                ("ended in the diary (no grant at MAX)", &r.removed_locally),
                ("detached at MAX (no link in the diary)", &r.detached),
                ("grants no link claims yet (MAX revokes them)", &r.awaiting),
                ("MAX newer than the diary (check backups)", &r.reported),
            ] {
                println!("{what}: {}", subjects.len());
                for s in subjects {
                    println!("  {s}");
                }
            }
            println!("refused jobs retried: {}", r.retried);
            if !r.reprovisioned.is_empty() || !r.detached.is_empty() {
                println!("(the repairs wait in the outbox: a running diary delivers them)");
            }
        }
        AdminCmd::Outbox { retry, retry_all } => {
            use edulink_diary::outbox;
            if retry.is_some() || retry_all {
                let n = outbox::retry_refused(st, retry.as_deref()).await?;
                println!("refused jobs due again: {n}");
            }
            let b = outbox::backlog(st).await?;
            println!("pending: {} (waiting out a backoff: {})", b.pending, b.waiting);
            let refused = outbox::refused(st).await?;
            println!("refused: {}", refused.len());
            for j in refused {
                println!(
                    "  {}\t{}\trefused at {}\tattempts {}\t{}",
                    j.id,
                    j.kind,
                    j.refused_at,
                    j.attempts,
                    j.last_error.unwrap_or_default()
                );
            }
        }
        AdminCmd::Trace { .. } => unreachable!("run with both databases"),
        AdminCmd::Audit { limit } => {
            for r in audit::newest(&st.db, limit).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    edulink::support::local_time(r.at),
                    r.event,
                    r.user_id.unwrap_or_default(),
                    r.subject.unwrap_or_default(),
                    r.ip.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// `edulink admin trace`: the diary's records of the login and MAX's about its subjects, as one
/// timeline. An unknown login is an error (non-zero exit).
async fn trace(diary: &edulink_store::Db, max: &edulink_store::Db, login: &str, since: i64) -> anyhow::Result<String> {
    use edulink::support::{Party, Step, render, timeline};
    let Some((user, _)) = edulink_diary::repo::user_by_login(diary, login).await? else {
        anyhow::bail!("{login}: no such diary login");
    };
    let (rows, subjects) = edulink_diary::audit::journey(diary, &user.id, since).await?;
    let mut steps: Vec<Step> =
        rows.into_iter().map(|r| Step { at: r.at, party: Party::Diary, event: r.event, detail: r.detail }).collect();
    for subject in &subjects {
        for r in edulink_max::audit::journey(max, subject, since).await? {
            steps.push(Step { at: r.at, party: Party::Max, event: r.event, detail: r.detail });
        }
    }
    Ok(render(login, &timeline(steps)))
}

trait NowSecs {
    fn now_secs(&self) -> i64;
}

impl NowSecs for SystemClock {
    fn now_secs(&self) -> i64 {
        edulink_domain::Clock::now(self)
    }
}
