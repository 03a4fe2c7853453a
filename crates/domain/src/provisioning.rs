//! The Сферум provisioning API contract: what the diary sends to attach verified school data to a
//! linked educational profile. Shared by both parties so that the wire format has one definition.

use serde::{Deserialize, Serialize};

/// The role of a person in the school, as verified by the diary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A pupil.
    Student,
    /// A teacher.
    Teacher,
}

impl Role {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Student => "student",
            Role::Teacher => "teacher",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "student" => Some(Role::Student),
            "teacher" => Some(Role::Teacher),
            _ => None,
        }
    }
}

/// A school as the diary names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct School {
    /// The diary's stable id of the school.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// A class (e.g. «7 А») as the diary names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Class {
    /// The diary's stable id of the class.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// A distance lesson of a class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lesson {
    /// The diary's stable id of the lesson.
    pub id: String,
    /// The class it belongs to.
    pub class_id: String,
    /// Subject, e.g. «Математика».
    pub subject: String,
    /// The teacher's display name.
    pub teacher: String,
    /// Start, Unix seconds.
    pub starts_at: i64,
    /// End, Unix seconds.
    pub ends_at: i64,
    /// The diary's revision of the lesson: it grows with every change, so a delivery that arrives
    /// twice, or late after a newer one, changes nothing.
    #[serde(default)]
    pub revision: i64,
    /// The call link of the school's conferencing service.
    #[serde(default)]
    pub call_url: Option<String>,
    /// Cancelled.
    #[serde(default)]
    pub cancelled: bool,
    /// No longer a distance lesson: it takes place in the classroom.
    #[serde(default)]
    pub in_class: bool,
}

impl Lesson {
    /// How Сферум stores the lesson's state: 0 held remotely, 1 cancelled, 2 held in class.
    pub fn state(&self) -> i64 {
        if self.cancelled {
            1
        } else if self.in_class {
            2
        } else {
            0
        }
    }
}

/// The longest call link.
pub const MAX_URL_LEN: usize = 500;

/// True for an absolute `https://` (or, for local runs, `http://`) URL of reasonable length.
pub fn valid_call_url(s: &str) -> bool {
    s.len() <= MAX_URL_LEN
        && url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some())
}

/// True for a call link a teacher types: an absolute `https://` URL only (the form says so; a plain
/// `http:` link lets anyone on the pupils' network read or change the call). The school's own room
/// links ([`valid_call_url`]) may be `http://` on local runs.
pub fn valid_teacher_call_url(s: &str) -> bool {
    valid_call_url(s) && url::Url::parse(s).is_ok_and(|u| u.scheme() == "https")
}

impl Lesson {
    fn check(&self) -> Result<(), &'static str> {
        let short = |s: &str| !s.trim().is_empty() && s.chars().count() <= MAX_NAME_LEN;
        if !short(&self.id) || !short(&self.subject) || !short(&self.teacher) || self.ends_at <= self.starts_at {
            return Err("lessons");
        }
        if self.revision < 0 || self.call_url.as_deref().is_some_and(|u| !valid_call_url(u)) {
            return Err("lessons");
        }
        Ok(())
    }
}

/// `PUT /sferum/api/v1/lessons/{id}`: the diary's current state of one distance lesson (created,
/// moved, changed or cancelled). Idempotent by `lesson.revision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LessonPush {
    /// The school of the class.
    pub school: School,
    /// The class.
    pub class: Class,
    /// The lesson.
    pub lesson: Lesson,
}

impl LessonPush {
    /// Checks the fields before anything is stored.
    pub fn validate(&self) -> Result<(), &'static str> {
        let short = |s: &str| !s.trim().is_empty() && s.chars().count() <= MAX_NAME_LEN;
        if !short(&self.school.id) || !short(&self.school.name) || !short(&self.class.id) || !short(&self.class.name) {
            return Err("class");
        }
        if self.lesson.class_id != self.class.id {
            return Err("lessons");
        }
        self.lesson.check()
    }
}

/// The answer to a lesson push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LessonPushResult {
    /// False when Сферум already had this revision or a newer one.
    pub applied: bool,
}

/// One member's «Подключиться» to a lesson, as the diary's sector knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttendanceEntry {
    /// The member's subject for the calling client.
    pub sub: String,
    /// When they first joined, Unix seconds.
    pub joined_at: i64,
}

/// `GET /sferum/api/v1/lessons/{id}/attendance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attendance {
    /// Who joined, in order of joining.
    pub attendance: Vec<AttendanceEntry>,
}

/// `PUT /sferum/api/v1/profiles/{sub}`: attach verified school data to the profile of the MAX
/// account that the calling client knows as `sub`. Idempotent: the latest state wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionProfile {
    /// Student or teacher.
    pub role: Role,
    /// First name from the diary.
    pub first_name: String,
    /// Last name from the diary.
    pub last_name: String,
    /// The school.
    pub school: School,
    /// The classes: a student's own class, or every class a teacher teaches.
    pub classes: Vec<Class>,
    /// Distance lessons of those classes.
    pub lessons: Vec<Lesson>,
}

/// The answer to a provisioning call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionResult {
    /// The chats the profile is a member of after the call.
    pub chats: Vec<String>,
}

/// Validation limits for provisioned text fields.
pub const MAX_NAME_LEN: usize = 100;

impl ProvisionProfile {
    /// Checks field lengths and cross-references before anything is stored.
    pub fn validate(&self) -> Result<(), &'static str> {
        let short = |s: &str| !s.trim().is_empty() && s.chars().count() <= MAX_NAME_LEN;
        if !short(&self.first_name) || !short(&self.last_name) {
            return Err("name");
        }
        if !short(&self.school.id) || !short(&self.school.name) {
            return Err("school");
        }
        if self.classes.is_empty() || self.classes.len() > 50 {
            return Err("classes");
        }
        if self.classes.iter().any(|c| !short(&c.id) || !short(&c.name)) {
            return Err("classes");
        }
        if self.lessons.len() > 500 {
            return Err("lessons");
        }
        for l in &self.lessons {
            l.check()?;
            if !self.classes.iter().any(|c| c.id == l.class_id) {
                return Err("lessons");
            }
        }
        Ok(())
    }
}
