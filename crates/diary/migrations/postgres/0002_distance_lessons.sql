-- Distance lessons that a teacher manages: a call link, cancellation, and a revision that grows with
-- every change so that Сферум applies each change once. Attendance comes back from Сферум.

ALTER TABLE lessons ADD COLUMN call_url TEXT;
ALTER TABLE lessons ADD COLUMN cancelled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE lessons ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;

CREATE TABLE attendance (
    lesson_id TEXT NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (lesson_id, user_id)
);
