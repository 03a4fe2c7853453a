-- Grants are found by account (a sign-in checks for a grant in the client's sector; deleting an
-- account cascades here) and by pairwise subject (the provisioning API): without these indexes
-- both scanned the whole table, once per sign-in and once per provisioning.
CREATE INDEX IF NOT EXISTS grants_account ON grants (account_id);
CREATE INDEX IF NOT EXISTS grants_subject ON grants (subject);
