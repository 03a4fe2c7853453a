-- A lesson's own chat leads back to the lesson (and deleting a chat cascades here): by index.
CREATE INDEX IF NOT EXISTS sferum_lessons_chat ON sferum_lessons (chat_id);
