//! What the diary tells Сферум: a person's verified school data (role, names, school, classes and
//! their distance lessons) and a lesson's current state. Read by the outbox at delivery time, so
//! Сферум always gets the diary's data as it is then.

use crate::DiaryState;
use crate::repo::{self, Lesson};
use edulink_domain::provisioning::{self, LessonPush, ProvisionProfile};
use edulink_store::{StoreError, sqlx};

/// Why a profile could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The diary account is gone.
    #[error("no diary user {0}")]
    NoUser(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the diary vouches for: role, names, school, classes and their distance lessons.
pub async fn profile_of(st: &DiaryState, user_id: &str) -> Result<ProvisionProfile, ProfileError> {
    let user = repo::user(&st.db, user_id).await?.ok_or_else(|| ProfileError::NoUser(user_id.to_owned()))?;
    let school = repo::school_name(&st.db, &user.school_id).await?;
    let classes = repo::classes_of(&st.db, &user).await?;
    let ids: Vec<String> = classes.iter().map(|(id, _)| id.clone()).collect();
    let now = st.now();
    let lessons = repo::distance_lessons(&st.db, &ids, now - 86_400, now + 14 * 86_400).await?;
    Ok(ProvisionProfile {
        role: user.role,
        first_name: user.first_name,
        last_name: user.last_name,
        school: provisioning::School { id: user.school_id, name: school },
        classes: classes.into_iter().map(|(id, name)| provisioning::Class { id, name }).collect(),
        lessons: lessons.iter().map(|l| sferum_lesson(st, l)).collect(),
    })
}

/// What Сферум is told of a lesson: its current state, under its current revision (a lesson that is
/// no longer a distance lesson is «held in class», not cancelled).
pub async fn push_of(st: &DiaryState, lesson: &Lesson) -> Result<LessonPush, StoreError> {
    let (school_id, school_name): (String, String) =
        sqlx::query_as("SELECT s.id, s.name FROM classes c JOIN schools s ON s.id = c.school_id WHERE c.id = $1")
            .bind(&lesson.class_id)
            .fetch_one(st.db.pool())
            .await?;
    Ok(LessonPush {
        school: provisioning::School { id: school_id, name: school_name },
        class: provisioning::Class { id: lesson.class_id.clone(), name: lesson.class_name.clone() },
        lesson: sferum_lesson(st, lesson),
    })
}

/// A lesson in Сферум's terms.
pub fn sferum_lesson(st: &DiaryState, l: &Lesson) -> provisioning::Lesson {
    provisioning::Lesson {
        id: l.id.clone(),
        class_id: l.class_id.clone(),
        subject: l.subject.clone(),
        teacher: l.teacher.clone(),
        starts_at: l.starts_at,
        ends_at: l.ends_at,
        revision: l.revision,
        call_url: Some(call_url(st, l)),
        cancelled: l.cancelled,
        in_class: !l.cancelled && !l.distance,
    }
}

/// The call link of a lesson: the teacher's, or the school's room derived from the configured base
/// URL and a keyed hash of the lesson (unguessable, stable across changes).
pub fn call_url(st: &DiaryState, lesson: &Lesson) -> String {
    match &lesson.call_url {
        Some(u) => u.clone(),
        None => {
            let room = st.cfg.secret.derive("diary/call-room").keyed_hash("room", &lesson.id);
            format!("{}/{}", st.cfg.call_base_url.trim_end_matches('/'), &room[..22])
        }
    }
}
