-- The link protocol (docs/architecture.md, «Links across the two parties»): per pairwise subject of
-- a sector, the newest link generation the diary told MAX of, whether that link was removed, and how
-- many link consents the subject has seen (ever, and when the live link was last provisioned), so a
-- late unlink never touches a newer link and a late provision never revives a removed one.
CREATE TABLE link_marks (
    sector          TEXT NOT NULL,
    subject         TEXT NOT NULL,
    generation      BIGINT NOT NULL,
    removed         BIGINT NOT NULL,
    consents        BIGINT NOT NULL DEFAULT 0,
    linked_consents BIGINT,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (sector, subject)
);
-- Grants made before the protocol serve the links the diary made before it: generation 0, live.
INSERT INTO link_marks (sector, subject, generation, removed, consents, linked_consents, updated_at)
    SELECT c.sector, g.subject, 0, 0, 0, 0, MIN(g.created_at) FROM grants g
    JOIN clients c ON c.client_id = g.client_id GROUP BY c.sector, g.subject;
-- When the person last consented to a link (`offline_access`): a grant that no link claims is
-- revoked a bounded time after it (an unfinished callback).
ALTER TABLE grants ADD COLUMN consented_at BIGINT NOT NULL DEFAULT 0;
UPDATE grants SET consented_at = created_at;
CREATE INDEX grants_consented ON grants (consented_at);
