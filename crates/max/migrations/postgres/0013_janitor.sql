-- The janitor (docs/retention.md): one lease row per job, so that one instance of a fleet runs it
-- at a time; a holder that died loses it when `expires_at` passes.
CREATE TABLE janitor_lease (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- The janitor finds expired rows by time, a bounded batch at a time: by index, not a scan per batch.
CREATE INDEX tokens_expires ON tokens (expires_at);
CREATE INDEX auth_codes_expires ON auth_codes (expires_at);
CREATE INDEX auth_requests_expires ON auth_requests (expires_at);
CREATE INDEX sessions_last_seen ON sessions (last_seen_at);
CREATE INDEX sms_challenges_expires ON sms_challenges (expires_at);
CREATE INDEX notifications_created ON notifications (created_at);
