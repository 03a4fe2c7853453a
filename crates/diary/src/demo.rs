//! The demo school: one school, two classes, ten students (`student1` … `student10`, password
//! `demo`), one teacher (`teacher`, password `demo`), and a week of lessons from today, some of them
//! distance lessons in Сферум. Seeded once: a second call finds the school and does nothing.

use crate::{PasswordCost, passwords};
use edulink_store::{Db, StoreError, sqlx};

/// The demo password of every demo account.
pub const DEMO_PASSWORD: &str = "demo";

const STUDENTS: [(&str, &str); 10] = [
    ("Алиса", "Иванова"),
    ("Борис", "Смирнов"),
    ("Вера", "Кузнецова"),
    ("Глеб", "Попов"),
    ("Дарья", "Васильева"),
    ("Егор", "Петров"),
    ("Жанна", "Соколова"),
    ("Захар", "Михайлов"),
    ("Ирина", "Новикова"),
    ("Кирилл", "Фёдоров"),
];

const SUBJECTS: [&str; 8] =
    ["Математика", "Русский язык", "Литература", "История", "Биология", "Английский язык", "Физика", "География"];

/// Seeds the demo school unless a school exists. Returns whether it seeded.
pub async fn seed(db: &Db, cost: PasswordCost, now: i64) -> Result<bool, StoreError> {
    let schools: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schools").fetch_one(db.pool()).await?;
    if schools > 0 {
        return Ok(false);
    }
    // The demo password is public: one hash (one salt) serves every demo account, which keeps the
    // first start fast and its memory small (each Argon2id hash takes 19 MiB while it runs).
    let hash = tokio::task::spawn_blocking(move || passwords::hash(DEMO_PASSWORD, cost))
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let hashes = vec![hash; 11];
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO schools (id, name) VALUES ('school-1', 'Школа № 1535')").execute(&mut tx).await?;
    for (id, name) in [("class-7a", "7 А"), ("class-7b", "7 Б")] {
        sqlx::query("INSERT INTO classes (id, school_id, name) VALUES ($1, 'school-1', $2)")
            .bind(id)
            .bind(name)
            .execute(&mut tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO users (id, login, password_hash, role, first_name, last_name, school_id, class_id, created_at) \
         VALUES ('teacher-1', 'teacher', $1, 'teacher', 'Ольга', 'Сергеевна', 'school-1', NULL, $2)",
    )
    .bind(&hashes[10])
    .bind(now)
    .execute(&mut tx)
    .await?;
    for class in ["class-7a", "class-7b"] {
        sqlx::query("INSERT INTO teacher_classes (teacher_id, class_id) VALUES ('teacher-1', $1)")
            .bind(class)
            .execute(&mut tx)
            .await?;
    }
    for (i, (first, last)) in STUDENTS.iter().enumerate() {
        let n = i + 1;
        let class = if n <= 5 { "class-7a" } else { "class-7b" };
        sqlx::query(
            "INSERT INTO users (id, login, password_hash, role, first_name, last_name, school_id, class_id, created_at) \
             VALUES ($1, $2, $3, 'student', $4, $5, 'school-1', $6, $7)",
        )
        .bind(format!("student-{n}"))
        .bind(format!("student{n}"))
        .bind(&hashes[i])
        .bind(first)
        .bind(last)
        .bind(class)
        .bind(now)
        .execute(&mut tx)
        .await?;
    }
    // A week of lessons from today (Moscow time, UTC+3), Monday to Saturday.
    let msk_midnight = now - (now + 3 * 3600).rem_euclid(86_400);
    let starts = [(8, 30), (9, 25), (10, 20), (11, 20), (12, 15)];
    for day in 0..7i64 {
        let midnight = msk_midnight + day * 86_400;
        let weekday = ((midnight + 3 * 3600) / 86_400 + 3).rem_euclid(7); // 0 = Monday
        if weekday == 6 {
            continue;
        }
        for (ci, class) in ["class-7a", "class-7b"].iter().enumerate() {
            for (li, (h, m)) in starts.iter().enumerate() {
                let start = midnight + h * 3600 + m * 60;
                let subject = SUBJECTS[(day as usize * 3 + li + ci * 2) % SUBJECTS.len()];
                // Two distance lessons a day per class: the third and the fifth.
                let distance = li == 2 || li == 4;
                sqlx::query(
                    "INSERT INTO lessons (id, class_id, subject, teacher_id, starts_at, ends_at, distance) \
                     VALUES ($1, $2, $3, 'teacher-1', $4, $5, $6)",
                )
                .bind(format!("lesson-{class}-{day}-{li}"))
                .bind(*class)
                .bind(subject)
                .bind(start)
                .bind(start + 45 * 60)
                .bind(i64::from(distance))
                .execute(&mut tx)
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(true)
}
