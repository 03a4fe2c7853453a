-- MAX: accounts keyed by phone, browser sessions, SMS challenges and limits, OIDC provider state.
-- Timestamps are Unix seconds. Secrets are never stored: only hashes (sessions, codes, tokens) or
-- keyed MACs (phone lookup, SMS codes) and AEAD ciphertexts (phone to send to, signing keys).

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    phone_hash  TEXT NOT NULL UNIQUE,
    phone_enc   TEXT NOT NULL,
    first_name  TEXT NOT NULL,
    last_name   TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE sessions (
    id_hash             TEXT PRIMARY KEY,
    account_id          TEXT REFERENCES accounts (id) ON DELETE CASCADE,
    csrf                TEXT NOT NULL,
    challenge_id        TEXT,
    verified_phone_hash TEXT,
    verified_phone_enc  TEXT,
    pending_request     TEXT,
    created_at          BIGINT NOT NULL,
    last_seen_at        BIGINT NOT NULL,
    auth_at             BIGINT
);
CREATE INDEX sessions_account ON sessions (account_id);

CREATE TABLE sms_challenges (
    id           TEXT PRIMARY KEY,
    session_hash TEXT NOT NULL,
    phone_hash   TEXT NOT NULL,
    phone_enc    TEXT NOT NULL,
    code_mac     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    used_at      BIGINT
);
CREATE INDEX sms_challenges_phone ON sms_challenges (phone_hash);

CREATE TABLE phone_state (
    phone_hash   TEXT PRIMARY KEY,
    last_sent_at BIGINT NOT NULL DEFAULT 0,
    failures     BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE rate_counters (
    bucket       TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    PRIMARY KEY (bucket, window_start)
);

CREATE TABLE clients (
    client_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_hash   TEXT,
    redirect_uris TEXT NOT NULL,
    id_token_alg  TEXT NOT NULL,
    sector        TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    private_enc TEXT NOT NULL,
    public_raw  TEXT NOT NULL,
    public_jwk  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

CREATE TABLE auth_requests (
    id              TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    redirect_uri    TEXT NOT NULL,
    scope           TEXT NOT NULL,
    state           TEXT,
    nonce           TEXT,
    code_challenge  TEXT NOT NULL,
    hint_account_id TEXT,
    prompt_none     BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);

CREATE TABLE grants (
    id         TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    subject    TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (client_id, account_id),
    UNIQUE (client_id, subject)
);

CREATE TABLE auth_codes (
    code_hash      TEXT PRIMARY KEY,
    grant_id       TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    account_id     TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    nonce          TEXT,
    scope          TEXT NOT NULL,
    auth_time      BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT
);

CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    grant_id   TEXT,
    account_id TEXT,
    code_hash  TEXT,
    scope      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    rotated_at BIGINT
);
CREATE INDEX tokens_grant ON tokens (grant_id);
CREATE INDEX tokens_code ON tokens (code_hash);

CREATE TABLE notifications (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    client     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX notifications_account ON notifications (account_id, created_at);

CREATE TABLE audit (
    id        TEXT PRIMARY KEY,
    at        BIGINT NOT NULL,
    event     TEXT NOT NULL,
    account   TEXT,
    client_id TEXT,
    ip        TEXT,
    detail    TEXT
);
CREATE INDEX audit_at ON audit (at);
