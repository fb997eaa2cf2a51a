-- Redemption codes (issue 12): the top-up cards an operator sells or gives away. A batch's
-- codes are each worth its credits or one period of its plan; only their SHA-256 is stored,
-- and a code is redeemed once (the update that claims it is the only way to use it).
CREATE TABLE redemption_batches (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    credits     bigint CONSTRAINT redemption_batches_credits_check CHECK (credits > 0),
    plan_id     bigint REFERENCES plans (id) ON DELETE RESTRICT,
    code_count  integer NOT NULL CONSTRAINT redemption_batches_code_count_check
                CHECK (code_count BETWEEN 1 AND 10000),
    expires_at  timestamptz,
    note        text NOT NULL DEFAULT '',
    disabled_at timestamptz,
    created_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL,
    CONSTRAINT redemption_batches_worth_one_thing CHECK ((credits IS NULL) <> (plan_id IS NULL))
);

CREATE TABLE redemption_codes (
    code_hash   bytea PRIMARY KEY,
    batch_id    bigint NOT NULL REFERENCES redemption_batches (id) ON DELETE RESTRICT,
    redeemed_by uuid REFERENCES users (id) ON DELETE SET NULL,
    redeemed_at timestamptz
);
CREATE INDEX redemption_codes_batch_id_idx ON redemption_codes (batch_id);
