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
