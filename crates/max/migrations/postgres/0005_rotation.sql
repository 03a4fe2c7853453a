-- Signing keys are published before they sign (crates/max/src/keys/rotation.rs): a rotated key signs
-- from `active_from`; keys made before this column existed have signed since the beginning.
ALTER TABLE signing_keys ADD COLUMN active_from BIGINT NOT NULL DEFAULT 0;
-- A client's previous secret stays valid until `previous_secret_expires_at` after
-- `edulink max client rotate-secret` (crates/max/src/oidc/clients.rs).
ALTER TABLE clients ADD COLUMN previous_secret_hash TEXT;
ALTER TABLE clients ADD COLUMN previous_secret_expires_at BIGINT;
