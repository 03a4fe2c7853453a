//! «Подключиться»: attendance, reported to a diary by its own pairwise subjects.

use super::{Fixture, lesson, profile};
use crate::{attendance, lesson_for, provision, record_attendance};
use edulink_domain::provisioning::Role;

#[tokio::test]
async fn attendance_is_reported_by_the_callers_subjects_in_order_of_joining() {
    let mut fx = Fixture::new().await;
    for (id, first) in [("s1", "Вера"), ("s2", "Олег"), ("s3", "Ирина")] {
        fx.account(id, first, "Кузнецов").await;
        let mut p = profile(Role::Student, first, "Кузнецов", "7 А");
        p.lessons = vec![lesson("l1", 1)];
        provision(&fx.db, "mesh", id, &p, 10).await.unwrap();
    }
    // s1 has two grants in the diary's sector (web and app): the least subject stands for her.
    fx.grant("mesh.example", "s1", "sub-s1-web");
    fx.grant("mesh.example", "s1", "sub-s1-app");
    fx.grant("mesh.example", "s2", "sub-s2");
    // s3 is linked to another diary only: the caller does not learn about her.
    fx.grant("school.example", "s3", "sub-s3");

    let key = crate::key("mesh", "l1");
    assert!(attendance(&fx.db, &fx.dir, &key, "mesh.example").await.unwrap().is_empty());
    assert_eq!(fx.dir.calls(), 0, "nobody joined: MAX is not asked");
    assert!(record_attendance(&fx.db, &key, "s2", 36_100).await.unwrap());
    assert!(record_attendance(&fx.db, &key, "s3", 36_200).await.unwrap());
    assert!(record_attendance(&fx.db, &key, "s1", 36_300).await.unwrap());
    // The first join counts.
    assert!(!record_attendance(&fx.db, &key, "s2", 36_400).await.unwrap());
    assert!(lesson_for(&fx.db, &key, "s2").await.unwrap().unwrap().0.joined);

    let seen = attendance(&fx.db, &fx.dir, &key, "mesh.example").await.unwrap();
    assert_eq!(seen, [("sub-s2".to_owned(), 36_100), ("sub-s1-app".to_owned(), 36_300)]);
    assert_eq!(fx.dir.calls(), 1, "one call for the whole list");
    let other = attendance(&fx.db, &fx.dir, &key, "school.example").await.unwrap();
    assert_eq!(other, [("sub-s3".to_owned(), 36_200)]);
}
