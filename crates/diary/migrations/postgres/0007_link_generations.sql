-- The link protocol (docs/architecture.md, «Links across the two parties»): every link gets a
-- generation from a counter that only grows, carried by every message to MAX about it. Links made
-- before have generation 0 (MAX marks their grants so).
CREATE TABLE link_generations (
    id    BIGINT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO link_generations (id, value) VALUES (1, 0);
ALTER TABLE links ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
-- A job MAX refused for good waits for the reconciliation or support (`edulink admin outbox`)
-- instead of being marked done; a lease names its holder (instance and boot), so a restarted
-- instance takes back its own leases at once instead of after they end.
ALTER TABLE outbox ADD COLUMN refused_at BIGINT;
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
ALTER TABLE outbox ADD COLUMN lease_boot TEXT;
CREATE INDEX outbox_refused ON outbox (refused_at);
