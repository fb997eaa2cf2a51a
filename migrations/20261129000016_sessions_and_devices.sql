-- Sessions a user can see and end (issue 14): where and with what each was opened, and when it
-- was last used (written at most every five minutes, not per request). The devices an account
-- signed in from are kept as digests of address and user agent for 90 days, so a sign-in from
-- a new one is emailed.
ALTER TABLE sessions
    ADD COLUMN last_seen_at timestamptz,
    ADD COLUMN ip text,
    ADD COLUMN user_agent text;

CREATE TABLE known_devices (
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    fingerprint  bytea NOT NULL,
    last_seen_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, fingerprint)
);
