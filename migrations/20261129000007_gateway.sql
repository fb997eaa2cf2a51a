-- The metered gateway: API keys, upstream providers, credit leases and hourly usage.

-- Only the SHA-256 of a key is stored, with a short prefix to recognise it by.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CONSTRAINT api_keys_name_check CHECK (length(name) BETWEEN 1 AND 100),
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL CONSTRAINT api_keys_key_hash_key UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);

CREATE TABLE providers (
    slug        text PRIMARY KEY CONSTRAINT providers_slug_check CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    base_url    text NOT NULL,
    auth_header text,
    auth_value  text,
    cost        bigint NOT NULL CONSTRAINT providers_cost_check CHECK (cost >= 0),
    timeout_ms  integer NOT NULL CONSTRAINT providers_timeout_check CHECK (timeout_ms BETWEEN 1 AND 600000),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER providers_set_updated_at BEFORE UPDATE ON providers
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Credits an instance has set aside to spend in memory. They stay in the balance (so the
-- ledger still explains it) but cannot be spent twice: the available credits are
-- balance - reserved. A lease that is not renewed expires and gives back what it did not settle.
ALTER TABLE credit_accounts ADD COLUMN reserved bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT credit_accounts_reserved_check CHECK (reserved >= 0 AND reserved <= balance);

CREATE TABLE credit_leases (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES credit_accounts (user_id) ON DELETE RESTRICT,
    instance_id uuid NOT NULL,
    amount      bigint NOT NULL CONSTRAINT credit_leases_amount_check CHECK (amount >= 0),
    settled     bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT credit_leases_settled_check CHECK (settled >= 0 AND settled <= amount)
);
CREATE INDEX credit_leases_expires_at_idx ON credit_leases (expires_at);

-- Calls per account, key, provider and hour: `calls` answered below 500 (charged and counted
-- towards the quota), `errors` answered 50201 (neither).
CREATE TABLE usage_hourly (
    user_id  uuid NOT NULL,
    key_id   uuid NOT NULL,
    provider text NOT NULL,
    hour     timestamptz NOT NULL,
    calls    bigint NOT NULL DEFAULT 0,
    credits  bigint NOT NULL DEFAULT 0,
    errors   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, hour, key_id, provider)
);
