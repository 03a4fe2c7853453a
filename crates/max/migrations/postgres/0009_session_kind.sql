-- One purpose per credential (issue 20): a session is a browser's (`web`, the `max_sid` cookie) or
-- the app's (`app`, a bearer token for /api/v1), and is found only by its own kind of credential.
-- Sessions from before this column are browser sessions; an app signed in before it signs in again.
ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'web';
