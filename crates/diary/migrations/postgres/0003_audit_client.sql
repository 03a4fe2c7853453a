-- One audit record shape for both parties (crates/web/src/audit.rs): the diary records the OIDC
-- client too.
ALTER TABLE audit ADD COLUMN client_id TEXT;
