-- Orders and the Stripe events applied to them. An order of a subscription plan also carries
-- the subscription's state, as the webhooks report it.
CREATE TABLE orders (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_no                 text NOT NULL CONSTRAINT orders_order_no_key UNIQUE,
    user_id                  uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    plan_id                  bigint NOT NULL REFERENCES plans (id) ON DELETE RESTRICT,
    status                   text NOT NULL CONSTRAINT orders_status_check
                             CHECK (status IN ('pending', 'paid', 'expired', 'failed', 'cancelled', 'refunded')),
    billing_mode             text NOT NULL CONSTRAINT orders_billing_mode_check
                             CHECK (billing_mode IN ('one_time', 'subscription')),
    payment_method           text NOT NULL CONSTRAINT orders_payment_method_check
                             CHECK (payment_method IN ('credit_card', 'alipay', 'wechat_pay', 'manual')),
    provider                 text NOT NULL CONSTRAINT orders_provider_check CHECK (provider IN ('stripe', 'manual')),
    amount_cents             bigint NOT NULL,
    currency                 text NOT NULL,
    -- The plan's credits when the order was made: what a paid order or period grants.
    credits                  bigint NOT NULL,
    idempotency_key          text,
    checkout_session_id      text,
    checkout_url             text,
    checkout_attempts        integer NOT NULL DEFAULT 0,
    stripe_customer_id       text,
    stripe_subscription_id   text CONSTRAINT orders_stripe_subscription_id_key UNIQUE,
    stripe_payment_intent_id text,
    subscription_status      text,
    current_period_end       timestamptz,
    cancel_at_period_end     boolean NOT NULL DEFAULT false,
    -- `created` of the last Stripe event that set the subscription's state: older ones are ignored.
    subscription_state_at    timestamptz,
    refunded_credits         bigint NOT NULL DEFAULT 0,
    refund_shortfall         bigint NOT NULL DEFAULT 0,
    expires_at               timestamptz NOT NULL,
    paid_at                  timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_user_idempotency_key UNIQUE (user_id, idempotency_key)
);
CREATE INDEX orders_user_id_idx ON orders (user_id, id DESC);
CREATE INDEX orders_payment_intent_idx ON orders (stripe_payment_intent_id);
CREATE TRIGGER orders_set_updated_at BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Each Stripe event is recorded in the transaction that applies it: a redelivery finds it here.
CREATE TABLE stripe_events (
    id           text PRIMARY KEY,
    event_type   text NOT NULL,
    created      timestamptz NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
