//! Provisioning, lesson pushes and detaching.

use super::{Fixture, lesson, profile};
use crate::{Author, ChatKind, MessageKind, chats_of, detach, history, overview, provision, push_lesson};
use edulink_domain::provisioning::{Class, LessonPush, Role, School};
use edulink_store::{Db, sqlx};

/// Every membership: (chat id, title, member's role).
async fn memberships(db: &Db) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT c.id, c.title, m.role FROM sferum_chats c JOIN sferum_members m ON m.chat_id = c.id \
         ORDER BY c.kind, c.id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn provisioning_again_keeps_the_chats_and_applies_renames_and_roles() {
    let mut fx = Fixture::new().await;
    fx.account("a1", "Вера", "Кузнецова").await;
    let db = &fx.db;
    let first = provision(db, "diary", "a1", &profile(Role::Student, "Вера", "Кузнецова", "7 А"), 10).await.unwrap();
    let before = memberships(db).await;
    assert_eq!(before.len(), 2, "announcements and the class: {before:?}");
    assert!(before.iter().any(|(_, title, role)| title == "7 А" && role == "student"), "{before:?}");
    // The same call again: the same chats, nothing new.
    let again = provision(db, "diary", "a1", &profile(Role::Student, "Вера", "Кузнецова", "7 А"), 20).await.unwrap();
    assert_eq!(again.chats, first.chats);
    assert_eq!(memberships(db).await, before);
    // The class renamed and the role changed in the diary: the same chats, renamed, new role.
    let renamed = provision(db, "diary", "a1", &profile(Role::Teacher, "Вера", "Кузнецова", "8 А"), 30).await.unwrap();
    assert_eq!(renamed.chats, first.chats);
    let after = memberships(db).await;
    assert!(after.iter().any(|(_, title, _)| title == "8 А") && !after.iter().any(|(_, t, _)| t == "7 А"));
    assert!(after.iter().all(|(_, _, role)| role == "teacher"), "{after:?}");
}

#[tokio::test]
async fn provisioning_confirms_the_profile_joins_the_chats_and_leaves_a_former_class() {
    let mut fx = Fixture::new().await;
    fx.account("a1", "Вера", "Кузнецова").await;
    let mut p = profile(Role::Student, "Вера", "Кузнецова", "7 А");
    p.lessons = vec![lesson("l1", 1)];
    provision(&fx.db, "diary", "a1", &p, 10).await.unwrap();
    let o = overview(&fx.db, &fx.dir, "a1", 0).await.unwrap();
    let prof = o.profile.unwrap();
    assert_eq!(
        (prof.role, prof.school_name.as_deref(), prof.confirmed_by.as_deref()),
        (Role::Student, Some("Школа № 1"), Some("diary"))
    );
    assert!(prof.safe_mode);
    let kinds: Vec<ChatKind> = o.chats.iter().map(|c| c.kind).collect();
    assert_eq!(kinds, [ChatKind::Announcements, ChatKind::Class]);
    assert_eq!(o.lessons.len(), 1);
    assert_eq!((o.lessons[0].key.as_str(), o.lessons[0].class_title.as_str()), ("diary:l1", "7 А"));
    // Moved to another class: the old class chat (and its lesson) is left, the channel stays.
    p.classes = vec![Class { id: "c8b".into(), name: "8 Б".into() }];
    p.lessons.clear();
    provision(&fx.db, "diary", "a1", &p, 20).await.unwrap();
    let titles: Vec<String> = chats_of(&fx.db, &fx.dir, "a1").await.unwrap().into_iter().map(|c| c.title).collect();
    assert_eq!(titles, ["Школа № 1", "8 Б"]);
    assert!(overview(&fx.db, &fx.dir, "a1", 0).await.unwrap().lessons.is_empty());
    // Everybody here has a profile: MAX was never asked.
    assert_eq!(fx.dir.calls(), 0);
}

#[tokio::test]
async fn a_lesson_push_applies_once_per_revision_and_announces_the_change() {
    let mut fx = Fixture::new().await;
    fx.account("a1", "Вера", "Кузнецова").await;
    provision(&fx.db, "diary", "a1", &profile(Role::Student, "Вера", "Кузнецова", "7 А"), 10).await.unwrap();
    let push = |revision, starts_at| {
        let mut l = lesson("l1", revision);
        l.starts_at = starts_at;
        l.ends_at = starts_at + 2_700;
        LessonPush {
            school: School { id: "s1".into(), name: "Школа № 1".into() },
            class: Class { id: "c7a".into(), name: "7 А".into() },
            lesson: l,
        }
    };
    let created = push_lesson(&fx.db, "diary", &push(1, 36_000), 20).await.unwrap();
    assert!(created.applied);
    let class_chat = created.announced_in.clone().unwrap();
    // The same revision again, or an older one: nothing.
    for stale in [push(1, 36_000), push(0, 40_000)] {
        let again = push_lesson(&fx.db, "diary", &stale, 30).await.unwrap();
        assert_eq!((again.applied, again.announced_in), (false, None));
    }
    let moved = push_lesson(&fx.db, "diary", &push(2, 40_000), 40).await.unwrap();
    assert_eq!(moved.announced_in.as_deref(), Some(class_chat.as_str()));
    let notes = history(&fx.db, &fx.dir, &class_chat, None, 10).await.unwrap();
    let kinds: Vec<MessageKind> = notes.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [MessageKind::LessonCreated, MessageKind::LessonMoved]);
    assert!(notes.iter().all(|m| m.author == Author::System && m.body == "Алгебра"));
    assert_eq!(notes[1].at_ref, Some(40_000));
}

#[tokio::test]
async fn detaching_leaves_every_chat_and_falls_back_to_the_account_name() {
    let mut fx = Fixture::new().await;
    // MAX knows her as «Вера Кузнецова»; the diary's name differs.
    fx.account("a1", "Вера", "Кузнецова").await;
    fx.account("t1", "Анна", "Петрова").await;
    provision(&fx.db, "diary", "a1", &profile(Role::Student, "Вероника", "Кузнецова-Ли", "7 А"), 10).await.unwrap();
    provision(&fx.db, "diary", "t1", &profile(Role::Teacher, "Анна", "Петрова", "7 А"), 10).await.unwrap();
    crate::open_direct(&fx.db, &fx.dir, "t1", "a1", 15).await.unwrap().unwrap();
    assert_eq!(chats_of(&fx.db, &fx.dir, "a1").await.unwrap().len(), 3);

    assert!(detach(&fx.db, &fx.dir, "diary", "a1", 30).await.unwrap());
    assert!(chats_of(&fx.db, &fx.dir, "a1").await.unwrap().is_empty());
    let prof = overview(&fx.db, &fx.dir, "a1", 0).await.unwrap().profile.unwrap();
    assert_eq!((prof.first_name.as_str(), prof.last_name.as_str()), ("Вера", "Кузнецова"));
    assert_eq!((prof.role, prof.school_name, prof.confirmed_by, prof.safe_mode), (Role::Student, None, None, true));
    // The name search follows the name (a protected pupil without a school is found by nobody, so the
    // stored key is what shows it).
    let key: String = sqlx::query_scalar("SELECT search_name FROM sferum_profiles WHERE account_id = 'a1'")
        .fetch_one(fx.db.pool())
        .await
        .unwrap();
    assert_eq!(key, "вера кузнецова");
    // Again: nothing left to detach.
    assert!(!detach(&fx.db, &fx.dir, "diary", "a1", 40).await.unwrap());
}
