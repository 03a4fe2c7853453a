-- Сферум inside MAX: educational profiles, chats and their members, distance lessons.
-- Lives in the MAX database; an account's profile goes when the account goes.

CREATE TABLE sferum_profiles (
    account_id   TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    role         TEXT NOT NULL,
    first_name   TEXT NOT NULL,
    last_name    TEXT NOT NULL,
    school_key   TEXT,
    school_name  TEXT,
    confirmed_by TEXT,
    confirmed_at BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE sferum_chats (
    id         TEXT PRIMARY KEY,
    school_key TEXT NOT NULL,
    class_key  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    title      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (school_key, class_key)
);

CREATE TABLE sferum_members (
    chat_id    TEXT NOT NULL REFERENCES sferum_chats (id) ON DELETE CASCADE,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    joined_at  BIGINT NOT NULL,
    PRIMARY KEY (chat_id, account_id)
);
CREATE INDEX sferum_members_account ON sferum_members (account_id);

CREATE TABLE sferum_lessons (
    id         TEXT PRIMARY KEY,
    class_key  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    teacher    TEXT NOT NULL,
    starts_at  BIGINT NOT NULL,
    ends_at    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX sferum_lessons_class ON sferum_lessons (class_key, starts_at);
