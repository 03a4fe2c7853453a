-- Chats for real: messages, the school's announcements channel, lesson chats (their members are the
-- class chat's: parent_id), direct conversations; safe mode; distance lessons with revisions, call
-- links and cancellation; attendance («Подключиться»).

ALTER TABLE sferum_profiles ADD COLUMN safe_mode BIGINT NOT NULL DEFAULT 1;
ALTER TABLE sferum_profiles ADD COLUMN search_name TEXT NOT NULL DEFAULT '';
UPDATE sferum_profiles SET safe_mode = 0 WHERE role = 'teacher';
CREATE INDEX sferum_profiles_school ON sferum_profiles (school_key);

ALTER TABLE sferum_chats ADD COLUMN parent_id TEXT REFERENCES sferum_chats (id) ON DELETE CASCADE;

ALTER TABLE sferum_lessons ADD COLUMN chat_id TEXT REFERENCES sferum_chats (id) ON DELETE SET NULL;
ALTER TABLE sferum_lessons ADD COLUMN call_url TEXT;
ALTER TABLE sferum_lessons ADD COLUMN cancelled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sferum_lessons ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;

-- A message's author is shown by name only while they are a member of the chat; afterwards under a
-- neutral label. System messages (lesson created, moved, cancelled) have no author and keep the
-- lesson's time in at_ref so they are rendered in the reader's language.
CREATE TABLE sferum_messages (
    id         BIGSERIAL PRIMARY KEY,
    chat_id    TEXT NOT NULL REFERENCES sferum_chats (id) ON DELETE CASCADE,
    author_id  TEXT REFERENCES accounts (id) ON DELETE SET NULL,
    kind       TEXT NOT NULL,
    body       TEXT NOT NULL,
    at_ref     BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX sferum_messages_chat ON sferum_messages (chat_id, id);

CREATE TABLE sferum_attendance (
    lesson_id  TEXT NOT NULL REFERENCES sferum_lessons (id) ON DELETE CASCADE,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    joined_at  BIGINT NOT NULL,
    PRIMARY KEY (lesson_id, account_id)
);
