-- Two-factor sign-in with TOTP (issue 14): the secret being enrolled until a first code
-- confirms it, the enrolled secret, and the last time step accepted (a code works once). Ten
-- single-use recovery codes, stored as SHA-256. A login of an enrolled account gets a
-- short-lived ticket for the second step instead of a session.
ALTER TABLE users
    ADD COLUMN totp_secret bytea,
    ADD COLUMN totp_pending_secret bytea,
    ADD COLUMN totp_last_step bigint;

CREATE TABLE recovery_codes (
    user_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL,
    used_at   timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE login_tickets (
    ticket_hash bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL,
    ip          text,
    user_agent  text
);
