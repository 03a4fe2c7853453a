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
            if !short(&l.id) || !short(&l.subject) || !short(&l.teacher) || l.ends_at <= l.starts_at {
                return Err("lessons");
            }
            if !self.classes.iter().any(|c| c.id == l.class_id) {
                return Err("lessons");
            }
        }
        Ok(())
    }
}
