-- The janitor (docs/retention.md): one lease row per job, so that one instance of a fleet runs it
-- at a time; a holder that died loses it when `expires_at` passes.
CREATE TABLE janitor_lease (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- The janitor finds expired rows by time, a bounded batch at a time: by index, not a scan per batch.
CREATE INDEX audit_at ON audit (at);
CREATE INDEX sessions_last_seen ON sessions (last_seen_at);
CREATE INDEX oidc_transactions_expires ON oidc_transactions (expires_at);
CREATE INDEX api_tokens_expires ON api_tokens (expires_at);
CREATE INDEX outbox_done ON outbox (done_at);
-- Minimal storage (issue 19): the ID token kept as the next sign-in's `id_token_hint` carries the
-- child's name, so it is kept only encrypted under the master key (`links.id_token_hint` context).
-- Hints stored in the clear are dropped: a sign-in works without one and stores a new one.
ALTER TABLE links ADD COLUMN id_token_enc TEXT;
ALTER TABLE links DROP COLUMN id_token;
