-- The SMS-pumping check counts the last hour's challenges every minute: a range, not a scan of
-- every challenge ever sent.
CREATE INDEX IF NOT EXISTS sms_challenges_created ON sms_challenges (created_at);
