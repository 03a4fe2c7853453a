//! `edulink-bench`: the load benchmark of docs/architecture.md «Numbers» (issue 7).
//!
//! Starts `edulink serve` (release build, SQLite in a temporary directory, or PostgreSQL with
//! `--postgres URL`) and a bare axum "hello world" as separate processes on loopback, then drives
//! concurrent virtual students through the sign-in flow of a linked student, the full link flow and the
//! cheap endpoints, and prints rate, latency percentiles, errors, the server's CPU per operation and peak
//! RSS, and the ratio to the baseline. Every phase is bounded in time; the whole run stops by itself
//! at `--time-limit`.

mod browser;
mod flows;
mod server;

use anyhow::Context;
use browser::{Browser, Jar};
use clap::{Parser, Subcommand, ValueEnum};
use flows::{Ctx, Sms};
use reqwest::Url;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "edulink-bench", about = "Load benchmark of edulink (docs/architecture.md «Numbers»)")]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Seconds of measurement for each flow scenario (sign-in, link).
    #[arg(long, default_value_t = 12.0)]
    duration: f64,
    /// Seconds of measurement for each cheap endpoint and the baseline.
    #[arg(long, default_value_t = 3.0)]
    cheap_duration: f64,
    /// Concurrent virtual students (flows) or connections (cheap endpoints).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Run both parties on this PostgreSQL (fresh schemas, dropped afterwards) instead of SQLite.
    #[arg(long)]
    postgres: Option<String>,
    /// The `edulink` binary (default: `edulink` next to this one, i.e. the same release build).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Where the link flow reads SMS codes: MAX's dev inbox (`GET /dev/sms`) or an HTTP SMS provider
    /// stand-in inside the benchmark (MAX's `http` gateway posts to it).
    #[arg(long, value_enum, default_value_t = SmsMode::Dev)]
    sms: SmsMode,
    /// Signed-in, unlinked diary users prepared for the link scenario (one per link flow).
    #[arg(long, default_value_t = 8000)]
    link_users: usize,
    /// Scenarios to run (comma-separated): baseline, healthz, discovery, jwks, sso, link, oracle,
    /// janitor (sso while `edulink janitor` deletes `--janitor-rows` expired tokens; not run by default).
    #[arg(long, value_delimiter = ',', default_value = "baseline,healthz,discovery,jwks,sso,link,oracle")]
    only: Vec<String>,
    /// Expired MAX tokens seeded for the janitor scenario (issue 19: sign-in p99 while it deletes them).
    #[arg(long, default_value_t = 1_000_000)]
    janitor_rows: usize,
    /// Hard limit for the whole run, seconds: past it the servers are killed and the run stops.
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Parent of the temporary directory (SQLite files, logs). Default: the system's temp dir, on disk
    /// here, so every durable SQLite commit pays a real fsync; `/dev/shm` shows the cost without it.
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// Keep the temporary directory (server logs, SQLite files) and print its path.
    #[arg(long)]
    keep: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// (internal) Run the bare axum baseline server.
    #[command(hide = true)]
    Baseline {
        #[arg(long)]
        listen: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SmsMode {
    Dev,
    Sink,
}

/// What one scenario measured.
#[derive(Default)]
struct Outcome {
    name: String,
    unit: &'static str,
    ok: u64,
    errors: u64,
    requests: u64,
    lat_us: Vec<u32>,
    elapsed: f64,
    server_cpu: f64,
    own_cpu: f64,
    db_cpu: f64,
    machine_busy: f64,
    peak_kib: u64,
    first_error: Option<String>,
    note: String,
    /// SQLite write transactions and group commits during the scenario, per database (from the
    /// server's `/metrics`; empty on PostgreSQL, which has no such counters).
    writes: Vec<DbWrites>,
}

/// One SQLite database's write counters over a scenario.
struct DbWrites {
    db: String,
    writes: f64,
    commits: f64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.max(1e-9)
    }
    fn req_rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.max(1e-9)
    }
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (self.lat_us.len() - 1) as f64).round() as usize;
        f64::from(self.lat_us[i]) / 1000.0
    }
}

/// One worker's tally.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    requests: u64,
    lat_us: Vec<u32>,
    first_error: Option<String>,
    end: Option<Instant>,
}

impl Tally {
    fn record(&mut self, started: Instant, requests: u64, r: Result<(), String>) {
        self.requests += requests;
        match r {
            Ok(()) => {
                self.ok += 1;
                self.lat_us.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

/// Measures the workers between the barrier and their end: rate over wall time, the server's CPU
/// and peak RSS (reset at the barrier).
async fn measure(
    name: &str,
    unit: &'static str,
    pid: u32,
    metrics: Option<&Url>,
    barrier: Arc<tokio::sync::Barrier>,
    workers: Vec<tokio::task::JoinHandle<Tally>>,
) -> Outcome {
    barrier.wait().await;
    let writes0 = match metrics {
        Some(url) => server::sqlite_writes(url).await,
        None => Vec::new(),
    };
    server::reset_peak(pid);
    let (cpu0, own0, t0) = (server::cpu_secs(pid), server::cpu_secs(std::process::id()), Instant::now());
    let (db0, m0) = (server::cpu_secs_named("postgres"), server::machine_cpu());
    let mut out = Outcome { name: name.into(), unit, ..Default::default() };
    let mut end = t0;
    for w in workers {
        let t = w.await.unwrap_or_default();
        out.ok += t.ok;
        out.errors += t.errors;
        out.requests += t.requests;
        out.lat_us.extend(t.lat_us);
        if out.first_error.is_none() {
            out.first_error = t.first_error;
        }
        end = end.max(t.end.unwrap_or(t0));
    }
    out.elapsed = (end - t0).as_secs_f64();
    out.server_cpu = server::cpu_secs(pid) - cpu0;
    out.own_cpu = server::cpu_secs(std::process::id()) - own0;
    out.db_cpu = server::cpu_secs_named("postgres") - db0;
    let m1 = server::machine_cpu();
    out.machine_busy = (m1.0 - m0.0) / (m1.1 - m0.1).max(1e-9);
    out.peak_kib = server::peak_kib(pid);
    out.lat_us.sort_unstable();
    if let Some(url) = metrics {
        for (db, w1, c1) in server::sqlite_writes(url).await {
            let (w0, c0) = writes0.iter().find(|(d, ..)| *d == db).map(|&(_, w, c)| (w, c)).unwrap_or((0.0, 0.0));
            out.writes.push(DbWrites { db, writes: w1 - w0, commits: c1 - c0 });
        }
    }
    out
}

/// `GET url` in a loop on `conc` connections for `dur`.
async fn requests(name: &str, pid: u32, url: Url, conc: usize, dur: Duration) -> Outcome {
    let barrier = Arc::new(tokio::sync::Barrier::new(conc + 1));
    let workers = (0..conc)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            tokio::spawn(async move {
                let client = browser::client();
                let mut t = Tally::default();
                barrier.wait().await;
                let deadline = Instant::now() + dur;
                while Instant::now() < deadline {
                    let s = Instant::now();
                    let r = match client.get(url.clone()).send().await {
                        Ok(resp) if resp.status().is_success() => {
                            resp.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                        }
                        Ok(resp) => Err(format!("status {}", resp.status())),
                        Err(e) => Err(e.to_string()),
                    };
                    t.record(s, 1, r);
                }
                t.end = Some(Instant::now());
                t
            })
        })
        .collect();
    measure(name, "req", pid, None, barrier, workers).await
}

static NEXT_PHONE: AtomicU64 = AtomicU64::new(1_000_000);

/// A Russian mobile number no one used in this run.
fn new_phone() -> String {
    format!("+7916{:07}", NEXT_PHONE.fetch_add(1, Ordering::Relaxed))
}

/// Sign-in of linked students: each of `conc` students signs in to the diary and links once (setup),
/// then repeats «Сферум» → … → MAX «Сферум» page for `dur`.
async fn sso(ctx: &Ctx, pid: u32, conc: usize, dur: Duration, first_user: usize) -> Outcome {
    let barrier = Arc::new(tokio::sync::Barrier::new(conc + 1));
    let setup_failed = Arc::new(AtomicUsize::new(0));
    let workers = (0..conc)
        .map(|i| {
            let (ctx, barrier, setup_failed) = (ctx.clone(), barrier.clone(), setup_failed.clone());
            tokio::spawn(async move {
                let client = browser::client();
                let mut b = Browser::default();
                let mut t = Tally::default();
                let setup = async {
                    flows::diary_login(&ctx, &client, &mut b, &format!("bench{}", first_user + i)).await?;
                    flows::link(&ctx, &client, &mut b, &new_phone()).await
                }
                .await;
                if let Err(e) = &setup {
                    setup_failed.fetch_add(1, Ordering::Relaxed);
                    t.first_error = Some(format!("setup: {e}"));
                }
                barrier.wait().await;
                let deadline = Instant::now() + dur;
                while setup.is_ok() && Instant::now() < deadline {
                    let (s, r0) = (Instant::now(), b.requests);
                    let r = flows::sso(&ctx, &client, &mut b).await;
                    t.record(s, b.requests - r0, r);
                }
                t.end = Some(Instant::now());
                t
            })
        })
        .collect();
    let mut out = measure("sign-in flow (linked)", "flow", pid, Some(&ctx.metrics()), barrier, workers).await;
    let failed = setup_failed.load(Ordering::Relaxed);
    if failed > 0 {
        out.note = format!("{failed} students failed setup");
    }
    out
}

/// The link flow: `users` diary users are signed in first (setup, not measured); then `conc` workers
/// each take the next one and link it to a new phone, until `dur` ends or the users run out.
async fn link(ctx: &Ctx, pid: u32, conc: usize, dur: Duration, first_user: usize, users: usize) -> Outcome {
    let t_setup = Instant::now();
    let pool: Arc<Mutex<Vec<Jar>>> = Arc::new(Mutex::new(Vec::with_capacity(users)));
    let next = Arc::new(AtomicUsize::new(0));
    let logins: Vec<_> = (0..conc)
        .map(|_| {
            let (ctx, pool, next) = (ctx.clone(), pool.clone(), next.clone());
            tokio::spawn(async move {
                let client = browser::client();
                let mut failed = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= users {
                        return failed;
                    }
                    let mut b = Browser::default();
                    match flows::diary_login(&ctx, &client, &mut b, &format!("bench{}", first_user + i)).await {
                        Ok(()) => pool.lock().expect("pool").push(b.jar),
                        Err(_) => failed += 1,
                    }
                }
            })
        })
        .collect();
    let mut login_failures = 0;
    for l in logins {
        login_failures += l.await.unwrap_or(0);
    }
    let setup = t_setup.elapsed();
    let exhausted = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(conc + 1));
    let workers = (0..conc)
        .map(|_| {
            let (ctx, barrier, pool, exhausted) = (ctx.clone(), barrier.clone(), pool.clone(), exhausted.clone());
            tokio::spawn(async move {
                let client = browser::client();
                let mut t = Tally::default();
                barrier.wait().await;
                let deadline = Instant::now() + dur;
                while Instant::now() < deadline {
                    let Some(jar) = pool.lock().expect("pool").pop() else {
                        exhausted.fetch_add(1, Ordering::Relaxed);
                        break;
                    };
                    let mut b = Browser::with_jar(jar);
                    let s = Instant::now();
                    let r = flows::link(&ctx, &client, &mut b, &new_phone()).await;
                    t.record(s, b.requests, r);
                }
                t.end = Some(Instant::now());
                t
            })
        })
        .collect();
    let mut out = measure("link flow (new phone)", "flow", pid, Some(&ctx.metrics()), barrier, workers).await;
    out.note = format!("setup: {} sign-ins in {:.1} s", users - login_failures, setup.as_secs_f64());
    if login_failures > 0 {
        out.note.push_str(&format!(", {login_failures} sign-ins failed"));
    }
    if exhausted.load(Ordering::Relaxed) > 0 {
        out.note.push_str(&format!("; prepared users ran out after {:.1} s (raise --link-users)", out.elapsed));
    }
    out
}

/// The registered-phone oracle (SECURITY.md, issue 4): «Продолжить» for the demo phone, which has a
/// MAX account, and for new phones, alternately and one at a time (no queueing noise). Returns the
/// median latency of each, in milliseconds.
async fn oracle(ctx: &Ctx, rounds: usize) -> Result<(f64, f64), String> {
    let client = browser::client();
    let (mut registered, mut new) = (Vec::new(), Vec::new());
    for i in 0..rounds * 2 {
        let mut b = Browser::default();
        let login = b.get(&client, ctx.m("/login")).await?;
        let csrf = login.csrf()?;
        let phone = if i % 2 == 0 { "+79000000001".to_string() } else { format!("+7916{:07}", 8_000_000 + i) };
        let s = Instant::now();
        let p = b.post(&client, ctx.m("/login/phone"), &[("csrf", &csrf), ("phone", &phone)]).await?;
        let t = s.elapsed().as_secs_f64() * 1e3;
        if p.status != reqwest::StatusCode::SEE_OTHER {
            return Err(p.err("«Продолжить» refused"));
        }
        if i % 2 == 0 { registered.push(t) } else { new.push(t) }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(&mut registered), median(&mut new)))
}

/// Inserts `n` extra diary students `bench0` … (password `demo`, cheap Argon2id parameters: the
/// benchmark measures the link and sign-in flows, not password hashing).
async fn seed_users(url: &str, schema: Option<String>, n: usize) -> anyhow::Result<()> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).expect("Argon2 parameters");
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"edulink-bench-16").expect("salt");
    let hash = hasher.hash_password(b"demo", &salt).expect("hash").to_string();
    let cfg = edulink_store::PoolConfig { max_connections: 1, schema, ..Default::default() };
    let db = edulink_store::Db::connect(url, &cfg).await.context("connecting to the diary database")?;
    let mut tx = db.begin().await?;
    for i in 0..n {
        edulink_store::sqlx::query(
            "INSERT INTO users (id, login, password_hash, role, first_name, last_name, school_id, class_id, created_at) \
             VALUES ($1, $2, $3, 'student', 'Ученик', 'Нагрузочный', 'school-1', $4, 0)",
        )
        .bind(format!("bench-{i}"))
        .bind(format!("bench{i}"))
        .bind(&hash)
        .bind(if i % 2 == 0 { "class-7a" } else { "class-7b" })
        .execute(&mut tx)
        .await?;
    }
    tx.commit().await?;
    db.close().await;
    Ok(())
}

/// `n` MAX access tokens that expired a year ago, for the janitor scenario.
async fn seed_expired_tokens(url: &str, schema: Option<String>, n: usize) -> anyhow::Result<()> {
    let cfg = edulink_store::PoolConfig { max_connections: 1, schema, ..Default::default() };
    let db = edulink_store::Db::connect(url, &cfg).await.context("connecting to MAX's database")?;
    let year_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64 - 365 * 86_400;
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut tx = db.begin().await?;
        for i in chunk {
            edulink_store::sqlx::query(
                "INSERT INTO tokens (token_hash, kind, client_id, scope, created_at, expires_at) \
                 VALUES ($1, 'access', 'mesh', 'openid', $2, $2)",
            )
            .bind(format!("bench-expired-{i}"))
            .bind(year_ago)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
    }
    db.close().await;
    Ok(())
}

async fn drop_schemas(url: &str, schemas: &[String]) {
    let cfg = edulink_store::PoolConfig { max_connections: 1, ..Default::default() };
    if let Ok(db) = edulink_store::Db::connect(url, &cfg).await {
        for s in schemas {
            let sql = format!("DROP SCHEMA IF EXISTS {s} CASCADE");
            let _ = edulink_store::sqlx::raw_sql(edulink_store::sqlx::AssertSqlSafe(sql)).execute(db.pool()).await;
        }
        db.close().await;
    }
}

/// The SMS provider stand-in: MAX's `http` gateway posts `{to, text}` here.
async fn sms_sink(codes: Arc<Mutex<HashMap<String, String>>>) -> anyhow::Result<Url> {
    #[derive(serde::Deserialize)]
    struct Sms {
        to: String,
        text: String,
    }
    let app = axum::Router::new().route(
        "/send",
        axum::routing::post(move |axum::Json(m): axum::Json<Sms>| async move {
            codes.lock().expect("sms sink").insert(m.to, m.text);
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = Url::parse(&format!("http://{}/send", listener.local_addr()?))?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_report(results: &[Outcome], base: Option<f64>) {
    println!();
    println!(
        "{:<28} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>10} {:>9} {:>9}",
        "scenario",
        "rate/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "ok",
        "errors",
        "req/op",
        "req/s",
        "srv CPU/op",
        "peak MiB",
        "vs base"
    );
    for o in results {
        let per_op = if o.ok + o.errors > 0 { o.requests as f64 / (o.ok + o.errors) as f64 } else { 0.0 };
        let cpu_op = if o.ok > 0 { o.server_cpu / o.ok as f64 * 1e3 } else { f64::NAN };
        let vs = base.map(|b| format!("{:.2}", o.req_rate() / b)).unwrap_or_else(|| "-".into());
        println!(
            "{:<28} {:>8.0}/{} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>8} {:>7.1} {:>9.0} {:>7.3} ms {:>9.1} {:>9}",
            o.name,
            o.rate(),
            if o.unit == "flow" { "f" } else { "r" },
            o.pct(50.0),
            o.pct(95.0),
            o.pct(99.0),
            o.ok,
            o.errors,
            per_op,
            o.req_rate(),
            cpu_op,
            mib(o.peak_kib),
            vs
        );
    }
    println!();
    println!("rate/s: successful flows (f) or requests (r) per second of wall time; req/op: HTTP requests the");
    println!("client sent per operation (redirect hops included, back-channel calls not); srv CPU/op: server");
    println!("process CPU (user+sys, all threads) per successful operation; vs base: HTTP requests/s relative to");
    println!("the bare axum baseline; peak MiB: VmHWM of the server process during the scenario.");
    for o in results {
        if !o.note.is_empty() {
            println!("note [{}]: {}", o.name, o.note);
        }
        if let Some(e) = &o.first_error {
            println!("first error [{}]: {e}", o.name);
        }
        println!(
            "cpu [{}]: server {:.1} s, load generator {:.1} s, postgres {:.1} s over {:.1} s wall; machine {:.0}% busy",
            o.name,
            o.server_cpu,
            o.own_cpu,
            o.db_cpu,
            o.elapsed,
            o.machine_busy * 100.0
        );
        if o.ok > 0 && !o.writes.is_empty() {
            let per = |x: f64| x / (o.ok + o.errors) as f64;
            let dbs: Vec<String> = o
                .writes
                .iter()
                .map(|w| {
                    format!(
                        "{} {:.2} ({:.1} per commit)",
                        w.db,
                        per(w.writes),
                        if w.commits > 0.0 { w.writes / w.commits } else { 0.0 }
                    )
                })
                .collect();
            println!("writes [{}]: SQLite write transactions per operation: {}", o.name, dbs.join(", "));
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("edulink-bench-");
    let dir = match &args.tmp {
        Some(parent) => builder.tempdir_in(parent)?,
        None => builder.tempdir()?,
    };
    let bin = match &args.server {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("edulink"),
    };
    anyhow::ensure!(
        bin.exists(),
        "no server binary at {} (build with `cargo build --release -p edulink`)",
        bin.display()
    );
    let want = |s: &str| args.only.iter().any(|o| o == s);
    let conc = args.concurrency.max(1);
    let (dur, cheap) = (Duration::from_secs_f64(args.duration), Duration::from_secs_f64(args.cheap_duration));

    println!(
        "edulink-bench: server {}, {} cores, concurrency {conc}",
        bin.display(),
        std::thread::available_parallelism()?
    );

    // The baseline: a bare axum hello world, its own process, same client.
    let base_port = server::free_port()?;
    let mut bcmd = Command::new(std::env::current_exe()?);
    bcmd.args(["baseline", "--listen", &format!("127.0.0.1:{base_port}")]);
    let base_proc = server::spawn(bcmd, &dir.path().join("baseline.log"), "baseline ready")?;

    // The server under test.
    let codes = Arc::new(Mutex::new(HashMap::new()));
    let (dport, mport, oport) = (server::free_port()?, server::free_port()?, server::free_port()?);
    let mut cmd = Command::new(&bin);
    cmd.arg("serve").arg("--data-dir").arg(dir.path().join("data"));
    cmd.env("EDULINK_DIARY__LISTEN", format!("127.0.0.1:{dport}"))
        .env("EDULINK_MAX__LISTEN", format!("127.0.0.1:{mport}"))
        .env("EDULINK_OPS__LISTEN", format!("127.0.0.1:{oport}"))
        // Benchmark-only limits (production refuses a resend gap below 60 s): one IP sends every code.
        .env("EDULINK_MAX__LIMITS__RESEND_GAP_SECS", "0")
        .env("EDULINK_MAX__LIMITS__PER_PHONE_HOUR", "1000000")
        .env("EDULINK_MAX__LIMITS__PER_PHONE_DAY", "1000000")
        .env("EDULINK_MAX__LIMITS__PER_IP_HOUR", "1000000000")
        .env("EDULINK_MAX__LIMITS__GLOBAL_HOUR", "1000000000");
    let sms = match args.sms {
        SmsMode::Dev => Sms::Dev,
        SmsMode::Sink => {
            let url = sms_sink(codes.clone()).await?;
            cmd.env("EDULINK_MAX__SMS__GATEWAY", "http")
                .env("EDULINK_MAX__SMS__URL", url.as_str())
                .env("EDULINK_MAX__SMS__TOKEN", "bench");
            Sms::Sink(codes)
        }
    };
    let tag = format!("bench{}_{}", std::process::id(), Instant::now().elapsed().subsec_nanos() % 100_000);
    let schemas = [format!("{tag}_diary"), format!("{tag}_max")];
    if let Some(pg) = &args.postgres {
        cmd.env("EDULINK_DIARY__DATABASE_URL", pg)
            .env("EDULINK_MAX__DATABASE_URL", pg)
            .env("EDULINK_DIARY__POOL__SCHEMA", &schemas[0])
            .env("EDULINK_MAX__POOL__SCHEMA", &schemas[1]);
    }
    // The janitor scenario runs `edulink janitor` with the server's configuration.
    let server_env: Vec<(std::ffi::OsString, std::ffi::OsString)> =
        cmd.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))).collect();
    let result = async {
        let srv = server::spawn(cmd, &dir.path().join("edulink.log"), "MAX with")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = server::rss_kib(srv.pid);
        println!(
            "storage: {}; start to ready: {} ms (fresh data: migrations, demo seed, key generation); idle RSS: {:.1} MiB",
            if args.postgres.is_some() { "PostgreSQL".to_string() } else { format!("SQLite (WAL) in {}", dir.path().display()) },
            srv.start_to_ready.as_millis(),
            mib(idle)
        );
        let ctx = Ctx {
            diary: Url::parse(&format!("http://127.0.0.1:{dport}/"))?,
            max: Url::parse(&format!("http://127.0.0.1:{mport}/"))?,
            ops: Url::parse(&format!("http://127.0.0.1:{oport}/"))?,
            sms,
        };
        let (db_url, schema) = match &args.postgres {
            Some(pg) => (pg.clone(), Some(schemas[0].clone())),
            None => (format!("sqlite://{}", dir.path().join("data/diary.db").display()), None),
        };
        let sso_users = if want("sso") { conc } else { 0 };
        let link_users = if want("link") { args.link_users } else { 0 };
        let janitor_users = if want("janitor") { conc } else { 0 };
        seed_users(&db_url, schema, sso_users + link_users + janitor_users).await?;

        let mut results = Vec::new();
        let mut base_rate = None;
        if want("baseline") {
            let o = requests("bare axum hello world", base_proc.pid, Url::parse(&format!("http://127.0.0.1:{base_port}/"))?, conc, cheap).await;
            base_rate = Some(o.req_rate());
            results.push(o);
        }
        for (name, url) in [
            ("healthz", ctx.d("/healthz")),
            ("discovery", ctx.m("/.well-known/openid-configuration")),
            ("jwks", ctx.m("/oauth/jwks")),
        ] {
            if want(name) {
                results.push(requests(name, srv.pid, url, conc, cheap).await);
            }
        }
        if want("sso") {
            results.push(sso(&ctx, srv.pid, conc, dur, 0).await);
        }
        if want("link") {
            results.push(link(&ctx, srv.pid, conc, dur, sso_users, link_users).await);
        }
        if want("janitor") {
            let (max_url, max_schema) = match &args.postgres {
                Some(pg) => (pg.clone(), Some(schemas[1].clone())),
                None => (format!("sqlite://{}", dir.path().join("data/max.db").display()), None),
            };
            seed_expired_tokens(&max_url, max_schema, args.janitor_rows).await?;
            let mut janitor = Command::new(&bin);
            janitor.arg("janitor").arg("--data-dir").arg(dir.path().join("data"));
            janitor.envs(server_env.iter().map(|(k, v)| (k, v)));
            janitor.stdout(std::process::Stdio::null());
            let started = Instant::now();
            let mut child = janitor.spawn().context("starting edulink janitor")?;
            let name = format!("sso while the janitor deletes {} expired tokens", args.janitor_rows);
            let mut o = sso(&ctx, srv.pid, conc, dur, sso_users + link_users).await;
            o.name = name;
            let status = tokio::task::spawn_blocking(move || child.wait()).await??;
            println!(
                "janitor: {} rows deleted in {:.1} s ({status})",
                args.janitor_rows,
                started.elapsed().as_secs_f64()
            );
            results.push(o);
        }
        print_report(&results, base_rate);
        if want("oracle") {
            match oracle(&ctx, 100).await {
                Ok((reg, new)) => println!(
                    "registered-phone oracle («Продолжить», 100 + 100 sequential): median {reg:.2} ms for a registered \
                     phone, {new:.2} ms for a new one, difference {:.2} ms (target < 10 ms)",
                    (reg - new).abs()
                ),
                Err(e) => println!("registered-phone oracle: failed: {e}"),
            }
        }
        println!(
            "server: idle RSS {:.1} MiB, RSS now {:.1} MiB, start to ready {} ms; baseline idle RSS {:.1} MiB",
            mib(idle),
            mib(server::rss_kib(srv.pid)),
            srv.start_to_ready.as_millis(),
            mib(server::rss_kib(base_proc.pid))
        );
        drop(srv);
        anyhow::Ok(())
    }
    .await;
    drop(base_proc);
    if let Some(pg) = &args.postgres {
        drop_schemas(pg, &schemas).await;
    }
    if args.keep {
        println!("kept {}", dir.keep().display());
    }
    result
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(Cmd::Baseline { listen }) = &args.cmd {
        return rt.block_on(server::baseline(listen));
    }
    let limit = Duration::from_secs(args.time_limit);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("edulink-bench: time limit of {} s reached, stopping", limit.as_secs());
        server::kill_children();
        std::process::exit(2);
    });
    rt.block_on(run(args))
}
