-- One audit record shape for both parties (crates/web/src/audit.rs): MAX records the pairwise
-- subject too, so its records join the diary's through the link.
ALTER TABLE audit ADD COLUMN subject TEXT;
