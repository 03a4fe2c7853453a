//! Behind a load balancer (issue 17): MAX instances behind a forwarding proxy that appends the
//! client's address to `X-Forwarded-For` (as haproxy `option forwardfor` does), with the proxy's
//! address in `trusted_proxies`. The per-IP SMS budget and the audit trail see each student's own
//! address, not the balancer's; a client's own forwarding header changes nothing (RFC 7239 §7.4,
//! OWASP ASVS 5.0 V4.1: trust forwarding headers from known proxies only).

use edulink::app::Role;
use edulink_domain::ManualClock;
use edulink_store::sqlx;
use edulink_testkit::{
    Backend, Browser, Party, drop_schemas, forwarding_proxy, postgres_available, spawn_party, test_config,
};
use std::net::IpAddr;
use std::sync::Arc;

struct Proxied {
    url: String,
    maxes: Vec<Party>,
    addrs: Vec<std::net::SocketAddr>,
    inbox: edulink_sms::DevInbox,
    config: edulink::config::Config,
    _dir: tempfile::TempDir,
}

/// `instances` MAX instances behind a forwarding proxy on 127.0.0.1, which is the only trusted proxy.
async fn proxied(backend: Backend, instances: usize) -> Proxied {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(backend, dir.path()).with_secrets().unwrap();
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", lb.local_addr().unwrap());
    config.max.public_url = Some(url.clone());
    config.trusted_proxies = vec!["127.0.0.1/32".into()];
    config.max.limits.per_ip_hour = 3;
    let clock = Arc::new(ManualClock::default());
    let inbox = edulink_sms::DevInbox::default();
    let (mut maxes, mut addrs) = (vec![], vec![]);
    for _ in 0..instances {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        maxes.push(spawn_party(&config, Role::Max, l, clock.clone(), &inbox).await);
    }
    forwarding_proxy(lb, addrs.clone());
    Proxied { url, maxes, addrs, inbox, config, _dir: dir }
}

/// Asks for a code for `phone` (`+7 916 4xx-xx-xx`); whether an SMS went out.
async fn ask_code(b: &Browser, base: &str, inbox: &edulink_sms::DevInbox, n: u32, extra: Option<(&str, &str)>) -> bool {
    let login = b.visit(&format!("{base}/login")).await;
    let phone = format!("+7916400{n:04}");
    let form = [("csrf", login.csrf()), ("phone", phone.clone())];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = format!("{base}/login/phone");
    match extra {
        Some((name, value)) => b.post_with(&url, &form, name, value).await,
        None => b.post(&url, &form).await,
    };
    !inbox.to(&phone).is_empty()
}

async fn run(backend: Backend, instances: usize) {
    let p = proxied(backend, instances).await;
    let a_ip: IpAddr = "127.0.0.11".parse().unwrap();
    let b_ip: IpAddr = "127.0.0.12".parse().unwrap();
    let (a, b) = (Browser::from_address(a_ip), Browser::from_address(b_ip));
    // Student A spends the per-IP budget (3 an hour here)...
    for n in 0..3 {
        assert!(ask_code(&a, &p.url, &p.inbox, n, None).await, "code {n} for A");
    }
    assert!(!ask_code(&a, &p.url, &p.inbox, 3, None).await, "A's fourth code is over A's budget");
    // ...and a spoofed header does not buy A a new one: the proxy appends A's real address.
    assert!(!ask_code(&a, &p.url, &p.inbox, 4, Some(("x-forwarded-for", "198.51.100.1"))).await);
    // Student B, behind the same balancer, still gets codes: the budget is per student, not global.
    assert!(ask_code(&b, &p.url, &p.inbox, 5, None).await, "B is not limited by A");
    // Straight to an instance from an untrusted address, the header is ignored: A (127.0.0.11)
    // claiming to be someone else is still A.
    let direct = format!("http://{}", p.addrs[0]);
    assert!(!ask_code(&a, &direct, &p.inbox, 6, Some(("x-forwarded-for", "127.0.0.12"))).await);
    // The audit trail records the students' addresses, never the balancer's.
    let db = &p.maxes[0].running.max.as_ref().unwrap().db;
    let ips: Vec<Option<String>> = sqlx::query_scalar("SELECT ip FROM audit WHERE event = 'sms_sent' ORDER BY at, id")
        .fetch_all(db.pool())
        .await
        .unwrap();
    let mut ips: Vec<String> = ips.into_iter().flatten().collect();
    ips.sort();
    assert_eq!(ips, ["127.0.0.11", "127.0.0.11", "127.0.0.11", "127.0.0.12"]);
    let refused: Vec<Option<String>> =
        sqlx::query_scalar("SELECT ip FROM audit WHERE event = 'sms_refused'").fetch_all(db.pool()).await.unwrap();
    assert!(refused.iter().all(|ip| ip.as_deref() == Some("127.0.0.11")), "{refused:?}");
    for m in p.maxes {
        m.running.stop().await;
    }
    drop_schemas(&p.config).await;
}

#[tokio::test]
async fn per_ip_limits_and_audit_see_each_student_behind_the_balancer_sqlite() {
    run(Backend::Sqlite, 1).await;
}

#[tokio::test]
async fn per_ip_limits_and_audit_see_each_student_behind_the_balancer_two_instances_postgres() {
    if postgres_available().await {
        run(Backend::Postgres, 2).await;
    }
}
