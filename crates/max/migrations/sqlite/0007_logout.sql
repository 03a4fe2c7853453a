-- Sessions that end everywhere (crates/max/src/oidc/{logout,backchannel}.rs): OpenID Connect
-- RP-Initiated Logout 1.0 and Back-Channel Logout 1.0.

-- A client's logout registration, beside its registration in `clients`: where the browser may be
-- sent after a logout (matched exactly) and where logout tokens are posted.
CREATE TABLE client_logout (
    client_id                           TEXT PRIMARY KEY REFERENCES clients (client_id) ON DELETE CASCADE,
    post_logout_redirect_uris           TEXT NOT NULL,
    backchannel_logout_uri              TEXT,
    backchannel_logout_session_required BIGINT NOT NULL DEFAULT 0
);

-- Which clients received an ID token in which MAX session (`sid`, derived from the session id):
-- the clients a sign-out of that session notifies.
CREATE TABLE session_clients (
    sid        TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    account_id TEXT NOT NULL,
    subject    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (sid, client_id)
);
CREATE INDEX session_clients_account ON session_clients (account_id);
CREATE INDEX session_clients_created ON session_clients (created_at);

-- Logout tokens still to deliver: written with the sign-out that needs them, removed once the
-- client answered 2xx, retried with backoff until then.
CREATE TABLE backchannel_jobs (
    id              TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    sid             TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_error      TEXT
);
CREATE INDEX backchannel_jobs_due ON backchannel_jobs (next_attempt_at);

-- The session a code was issued in, for the ID token's `sid`.
ALTER TABLE auth_codes ADD COLUMN sid TEXT;
