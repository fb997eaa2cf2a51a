-- What can be bought. The active `free` plan holds the limits of accounts without an active
-- subscription; plans that orders refer to are deactivated rather than deleted.
CREATE TABLE plans (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL CONSTRAINT plans_name_check CHECK (length(name) BETWEEN 1 AND 100),
    plan_type       text NOT NULL
                    CONSTRAINT plans_plan_type_check CHECK (plan_type IN ('free', 'one_time', 'subscription')),
    amount_cents    bigint NOT NULL CONSTRAINT plans_amount_check CHECK (amount_cents >= 0),
    currency        text NOT NULL DEFAULT 'usd' CONSTRAINT plans_currency_check CHECK (currency ~ '^[a-z]{3}$'),
    interval        text CONSTRAINT plans_interval_value_check CHECK (interval IN ('month', 'year')),
    credits         bigint NOT NULL DEFAULT 0 CONSTRAINT plans_credits_check CHECK (credits >= 0),
    monthly_quota   bigint CONSTRAINT plans_monthly_quota_check CHECK (monthly_quota >= 0),
    rps_limit       integer NOT NULL CONSTRAINT plans_rps_check CHECK (rps_limit > 0),
    rph_limit       integer NOT NULL CONSTRAINT plans_rph_check CHECK (rph_limit > 0),
    description     text NOT NULL DEFAULT '',
    active          boolean NOT NULL DEFAULT true,
    stripe_price_id text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Subscriptions renew every interval; nothing else has one.
    CONSTRAINT plans_interval_check CHECK ((plan_type = 'subscription') = (interval IS NOT NULL))
);
CREATE UNIQUE INDEX plans_one_active_free_key ON plans (plan_type) WHERE plan_type = 'free' AND active;
CREATE TRIGGER plans_set_updated_at BEFORE UPDATE ON plans
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

INSERT INTO plans (name, plan_type, amount_cents, currency, credits, monthly_quota, rps_limit,
                   rph_limit, description)
VALUES ('Free', 'free', 0, 'usd', 0, 1000, 2, 100,
        'The limits of every account without an active subscription.');
