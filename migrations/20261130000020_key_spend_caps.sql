-- Per-key spend caps (issue 14 point 6): a key may spend at most `spend_cap_credits` credits
-- per calendar month (UTC) or in total. What it spent is its settled usage (`usage_hourly`);
-- what instances may still spend of it is reserved in `key_spend_leases`, like the account's
-- credits in `credit_leases`, so a cap holds exactly across instances.
ALTER TABLE api_keys
    ADD COLUMN spend_cap_credits bigint,
    ADD COLUMN spend_cap_period text,
    ADD CONSTRAINT api_keys_spend_cap_check CHECK (
        (spend_cap_credits IS NULL AND spend_cap_period IS NULL)
        OR (spend_cap_credits > 0 AND spend_cap_period IN ('month', 'total')));

-- One row per key and instance: `amount` reserved under the cap, `settled` of it already
-- written to `usage_hourly`. A cap's headroom is the cap less the period's usage less every
-- row's `amount - settled`; rows of dead instances expire and free their reserve.
CREATE TABLE key_spend_leases (
    key_id uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    instance_id uuid NOT NULL,
    amount bigint NOT NULL CONSTRAINT key_spend_leases_amount_check CHECK (amount >= 0),
    settled bigint NOT NULL DEFAULT 0
        CONSTRAINT key_spend_leases_settled_check CHECK (settled BETWEEN 0 AND amount),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (key_id, instance_id)
);
CREATE INDEX key_spend_leases_instance_idx ON key_spend_leases (instance_id);
