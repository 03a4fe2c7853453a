-- OpenID Connect Back-Channel Logout 1.0 from MAX (crates/diary/src/rp/backchannel.rs).
-- The MAX session (`sid`) of the link's stored ID token, and when a logout of that session reached
-- the diary: the next sign-in to Сферум is then a fresh one at MAX (`prompt=login`).
ALTER TABLE links ADD COLUMN max_sid TEXT;
ALTER TABLE links ADD COLUMN logged_out_at BIGINT;
-- Logout tokens seen, kept until they expire: a replayed `jti` is refused.
CREATE TABLE logout_jtis (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX logout_jtis_expires ON logout_jtis (expires_at);
