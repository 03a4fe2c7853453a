//! Chat access and membership, names of members without a profile, direct conversations.

use super::{Fixture, lesson, profile};
use crate::{Author, ChatKind, Denied, access, chats_of, history, members, open_direct, post, provision};
use edulink_domain::provisioning::Role;
use edulink_domain::sferum::MessageText;

/// A class «7 А» with teacher `t1` and student `s1`; outsider `x1` has a MAX account only.
async fn class() -> Fixture {
    let mut fx = Fixture::new().await;
    fx.account("t1", "Анна", "Петрова").await;
    fx.account("s1", "Вера", "Кузнецова").await;
    fx.account("x1", "Олег", "Смирнов").await;
    let mut teacher = profile(Role::Teacher, "Анна", "Петрова", "7 А");
    teacher.lessons = vec![lesson("l1", 1)];
    provision(&fx.db, "diary", "t1", &teacher, 10).await.unwrap();
    provision(&fx.db, "diary", "s1", &profile(Role::Student, "Вера", "Кузнецова", "7 А"), 10).await.unwrap();
    fx
}

async fn chat_of(fx: &Fixture, account: &str, kind: ChatKind) -> String {
    chats_of(&fx.db, &fx.dir, account).await.unwrap().into_iter().find(|c| c.kind == kind).unwrap().id
}

#[tokio::test]
async fn members_reach_their_chats_with_their_role_and_others_do_not() {
    let fx = class().await;
    let class_chat = chat_of(&fx, "s1", ChatKind::Class).await;
    let a = access(&fx.db, &fx.dir, &class_chat, "s1").await.unwrap().unwrap();
    assert_eq!((a.kind, a.title.as_str(), a.role), (ChatKind::Class, "7 А", Some(Role::Student)));
    assert_eq!(access(&fx.db, &fx.dir, &class_chat, "x1").await.unwrap(), Err(Denied::NotMember));
    assert_eq!(access(&fx.db, &fx.dir, "nope", "s1").await.unwrap(), Err(Denied::NotFound));
    // The lesson's chat takes its members from the class chat.
    let lesson_chat = crate::lesson_for(&fx.db, "diary:l1", "s1").await.unwrap().unwrap().0.chat_id.unwrap();
    let a = access(&fx.db, &fx.dir, &lesson_chat, "t1").await.unwrap().unwrap();
    assert_eq!((a.kind, a.role), (ChatKind::Lesson, Some(Role::Teacher)));
    assert_eq!(access(&fx.db, &fx.dir, &lesson_chat, "x1").await.unwrap(), Err(Denied::NotMember));
    // The member list: teachers first, then by name, each with a count on the chat list.
    let list = members(&fx.db, &fx.dir, &lesson_chat).await.unwrap();
    let names: Vec<(&str, Option<Role>)> = list.iter().map(|m| (m.name.as_str(), m.role)).collect();
    assert_eq!(names, [("Анна Петрова", Some(Role::Teacher)), ("Вера Кузнецова", Some(Role::Student))]);
    assert!(chats_of(&fx.db, &fx.dir, "s1").await.unwrap().iter().all(|c| c.members == 2));
    assert_eq!(fx.dir.calls(), 0, "everybody has a profile: MAX is not asked");
}

#[tokio::test]
async fn a_person_without_a_profile_is_named_by_max_in_one_call_per_page() {
    let fx = class().await;
    // The teacher writes to a MAX account without an educational profile.
    let direct = open_direct(&fx.db, &fx.dir, "t1", "x1", 20).await.unwrap().unwrap();
    let calls = fx.dir.calls();
    let a = access(&fx.db, &fx.dir, &direct, "t1").await.unwrap().unwrap();
    assert_eq!((a.kind, a.title.as_str(), a.role), (ChatKind::Direct, "Олег Смирнов", Some(Role::Teacher)));
    let theirs = access(&fx.db, &fx.dir, &direct, "x1").await.unwrap().unwrap();
    assert_eq!((theirs.title.as_str(), theirs.role), ("Анна Петрова", None));
    for (who, text) in [("x1", "Здравствуйте"), ("t1", "Добрый день"), ("x1", "Спасибо")] {
        post(&fx.db, &direct, who, &MessageText::parse(text).unwrap(), 30).await.unwrap();
    }
    let before = fx.dir.calls();
    let page = history(&fx.db, &fx.dir, &direct, None, 10).await.unwrap();
    assert_eq!(fx.dir.calls(), before + 1, "one call for the page, not one per message");
    let authors: Vec<String> = page
        .iter()
        .map(|m| match &m.author {
            Author::Member { name, .. } => name.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(authors, ["Олег Смирнов", "Анна Петрова", "Олег Смирнов"]);
    let list = members(&fx.db, &fx.dir, &direct).await.unwrap();
    let names: Vec<(&str, Option<Role>)> = list.iter().map(|m| (m.name.as_str(), m.role)).collect();
    assert_eq!(names, [("Анна Петрова", Some(Role::Teacher)), ("Олег Смирнов", None)]);
    assert!(fx.dir.calls() > calls);
}

#[tokio::test]
async fn direct_conversations_follow_safe_mode_and_need_an_account() {
    let fx = class().await;
    // A protected pupil and an outsider share no class: refused both ways.
    assert_eq!(open_direct(&fx.db, &fx.dir, "x1", "s1", 20).await.unwrap(), None);
    assert_eq!(open_direct(&fx.db, &fx.dir, "s1", "x1", 20).await.unwrap(), None);
    // Classmates may; opening again finds the same chat.
    let chat = open_direct(&fx.db, &fx.dir, "s1", "t1", 20).await.unwrap().unwrap();
    assert_eq!(open_direct(&fx.db, &fx.dir, "t1", "s1", 30).await.unwrap(), Some(chat));
    // No such account, or oneself: refused.
    assert_eq!(open_direct(&fx.db, &fx.dir, "t1", "ghost", 20).await.unwrap(), None);
    assert_eq!(open_direct(&fx.db, &fx.dir, "t1", "t1", 20).await.unwrap(), None);
}

#[tokio::test]
async fn a_former_member_keeps_their_messages_under_a_neutral_label() {
    let fx = class().await;
    let class_chat = chat_of(&fx, "s1", ChatKind::Class).await;
    post(&fx.db, &class_chat, "s1", &MessageText::parse("Привет").unwrap(), 20).await.unwrap();
    crate::detach(&fx.db, &fx.dir, "diary", "s1", 30).await.unwrap();
    assert_eq!(access(&fx.db, &fx.dir, &class_chat, "s1").await.unwrap(), Err(Denied::NotMember));
    let page = history(&fx.db, &fx.dir, &class_chat, None, 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!((page[0].author.clone(), page[0].body.as_str()), (Author::Former, "Привет"));
}
