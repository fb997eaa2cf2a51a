-- What stands between a stranger and an account: captchas, email codes, reset tokens, the
-- per-address email cooldown and the record of failed logins.

-- A captcha's answer, consumed (deleted) by the first attempt.
CREATE TABLE captchas (
    id         uuid PRIMARY KEY,
    answer     text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX captchas_expires_at_idx ON captchas (expires_at);

-- One email per address and purpose per cooldown; the row is taken with a conditional upsert.
CREATE TABLE mail_cooldowns (
    email   text NOT NULL,
    purpose text NOT NULL CONSTRAINT mail_cooldowns_purpose_check
            CHECK (purpose IN ('email_code', 'password_reset')),
    sent_at timestamptz NOT NULL,
    PRIMARY KEY (email, purpose)
);

-- The registration code of an address: its digest, its expiry and the tries spent on it.
CREATE TABLE email_codes (
    email      text PRIMARY KEY,
    code_hash  bytea NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE password_reset_tokens (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX password_reset_tokens_user_id_idx ON password_reset_tokens (user_id);

-- `subject` is `email:<digest>` or `ip:<address>`; rows older than the window are pruned.
CREATE TABLE login_failures (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject   text NOT NULL,
    failed_at timestamptz NOT NULL
);
CREATE INDEX login_failures_subject_idx ON login_failures (subject, failed_at);
