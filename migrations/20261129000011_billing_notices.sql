-- What a customer hears about billing (issue 12): emails in the account's language, a
-- low-balance alert at a threshold the user sets (sent once per crossing), and an outbox that
-- carries emails written inside a transaction out to the mail server after it commits.
ALTER TABLE users
    ADD COLUMN lang text NOT NULL DEFAULT 'en' CONSTRAINT users_lang_check CHECK (lang IN ('en', 'zh')),
    ADD COLUMN low_balance_alert bigint
        CONSTRAINT users_low_balance_alert_check CHECK (low_balance_alert > 0),
    -- Set when the alert went out; cleared once the balance is back at or above the threshold.
    ADD COLUMN low_balance_notified boolean NOT NULL DEFAULT false;

-- Emails to send. A row is written in the transaction whose effect it reports, and deleted once
-- the message is handed to the mail server; failures are retried with a growing delay.
CREATE TABLE mail_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient       text NOT NULL,
    lang            text NOT NULL,
    email           jsonb NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mail_outbox_due_idx ON mail_outbox (next_attempt_at);
-- The alert check reads only the accounts that set one.
CREATE INDEX users_low_balance_alert_idx ON users (id) WHERE low_balance_alert IS NOT NULL;
