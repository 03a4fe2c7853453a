-- The МЭШ diary: school data, accounts, sessions, OIDC relying-party transactions, links to MAX,
-- the outbox of calls to MAX, and the audit trail. Timestamps are Unix seconds.

CREATE TABLE schools (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE classes (
    id        TEXT PRIMARY KEY,
    school_id TEXT NOT NULL REFERENCES schools (id),
    name      TEXT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    login         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    first_name    TEXT NOT NULL,
    last_name     TEXT NOT NULL,
    school_id     TEXT NOT NULL REFERENCES schools (id),
    class_id      TEXT REFERENCES classes (id),
    created_at    BIGINT NOT NULL
);

CREATE TABLE teacher_classes (
    teacher_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    class_id   TEXT NOT NULL REFERENCES classes (id),
    PRIMARY KEY (teacher_id, class_id)
);

CREATE TABLE lessons (
    id         TEXT PRIMARY KEY,
    class_id   TEXT NOT NULL REFERENCES classes (id),
    subject    TEXT NOT NULL,
    teacher_id TEXT NOT NULL REFERENCES users (id),
    starts_at  BIGINT NOT NULL,
    ends_at    BIGINT NOT NULL,
    distance   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX lessons_class_time ON lessons (class_id, starts_at);

-- A session keeps its family across rotations (sign-in, link, re-authentication); a replaced id
-- stays readable for a few seconds so requests already in flight with it still complete.
CREATE TABLE sessions (
    id_hash      TEXT PRIMARY KEY,
    family       TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    auth_at      BIGINT NOT NULL,
    replaced_at  BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_family ON sessions (family);

CREATE TABLE oidc_transactions (
    state_hash   TEXT PRIMARY KEY,
    session_family TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose      TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    verifier_enc TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX oidc_transactions_user ON oidc_transactions (user_id);

CREATE TABLE links (
    user_id     TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    linked_at   BIGINT NOT NULL,
    refresh_enc TEXT,
    id_token    TEXT,
    CONSTRAINT links_issuer_subject UNIQUE (issuer, subject)
);

CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    done_at         BIGINT,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (done_at, next_attempt_at);

CREATE TABLE audit (
    id      TEXT PRIMARY KEY,
    at      BIGINT NOT NULL,
    event   TEXT NOT NULL,
    user_id TEXT,
    subject TEXT,
    ip      TEXT,
    detail  TEXT
);
CREATE INDEX audit_user ON audit (user_id, at);

CREATE TABLE rate_counters (
    bucket       TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    PRIMARY KEY (bucket, window_start)
);

-- Bearer tokens of the mobile apps (only their hash), and one-time tickets that hand an app's
-- sign-in over to the browser for «open Сферум».
CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE handoff_tickets (
    ticket_hash TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at  BIGINT NOT NULL
);
