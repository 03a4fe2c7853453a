-- Issue 16, item 10 (crates/max/src/oidc/{dpop,par,introspection}.rs).
-- Per client (RFC 9449 §5.2, RFC 9126 §6): its access tokens must be DPoP-bound; it must push its
-- authorization requests. Both 1 for the diary's public apps.
ALTER TABLE clients ADD COLUMN dpop_bound_access_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN require_pushed_authorization_requests BIGINT NOT NULL DEFAULT 0;
-- The RFC 7638 thumbprint of the key a token is bound to (`cnf.jkt`, RFC 9449 §6).
ALTER TABLE tokens ADD COLUMN jkt TEXT;
-- Keys that authorization requests and codes are bound to (`dpop_jkt`, RFC 9449 §10), by
-- `req:<request id>` or `code:<code hash>`; kept apart from the code tables, which other parts change.
CREATE TABLE dpop_bindings (
    binding    TEXT PRIMARY KEY,
    jkt        TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dpop_bindings_expiry ON dpop_bindings (expires_at);
-- Proofs seen (RFC 9449 §11.1): the hash of key thumbprint and `jti`, until the proof is too old anyway.
CREATE TABLE dpop_proofs (
    id         TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dpop_proofs_expiry ON dpop_proofs (expires_at);
-- Pushed authorization requests (RFC 9126), by the hash of their request_uri; single use. Expired rows
-- of these three tables are deleted now and then as new ones come (crates/max/src/repo/dpop.rs).
CREATE TABLE pushed_requests (
    uri_hash   TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    params     TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX pushed_requests_expiry ON pushed_requests (expires_at);
