-- OpenID provider (issue 16). A signed-in session asked to authenticate again (`prompt=login`, or an
-- authentication older than `max_age`) keeps its account until the new SMS sign-in succeeds and
-- replaces it: `reauth` = 1 meanwhile (crates/max/src/oidc/authorize.rs). `ui_lang` is the language
-- of the pending request's `ui_locales`, for the pages MAX shows it (OIDC Core §3.1.2.1).
ALTER TABLE sessions ADD COLUMN reauth BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN ui_lang TEXT;
-- The request's `max_age` (seconds), checked again when the code is issued.
ALTER TABLE auth_requests ADD COLUMN max_age BIGINT;
