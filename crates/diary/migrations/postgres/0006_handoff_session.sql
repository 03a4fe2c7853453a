-- An "open Сферум" handoff ticket belongs to the app session (API token) that asked for it and dies
-- with it (issue 20): signing the app out kills its tickets, and a ticket is honoured only while its
-- token lives. Tickets from before this column (60 s lifetime) have no token and are refused.
ALTER TABLE handoff_tickets ADD COLUMN token_hash TEXT;
CREATE INDEX handoff_tickets_token ON handoff_tickets (token_hash);
