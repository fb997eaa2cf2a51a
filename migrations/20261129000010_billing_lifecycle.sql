-- The billing lifecycle (issue 12): one Stripe customer per user, every paid invoice and
-- one-time payment recorded, disputes, and why an account is frozen.

-- Why an account is frozen: `admin` (an admin's decision) or `dispute` (a payment disputed at
-- the bank; a dispute won lifts it). Null while the account is active.
ALTER TABLE users ADD COLUMN frozen_reason text
    CONSTRAINT users_frozen_reason_check CHECK (frozen_reason IN ('admin', 'dispute'));
UPDATE users SET frozen_reason = 'admin' WHERE status = 'frozen';

-- The Stripe Customer of a user, created once and passed to every Checkout; `email` is the
-- address Stripe last received, so a changed address is sent again.
CREATE TABLE billing_customers (
    user_id            uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    stripe_customer_id text NOT NULL CONSTRAINT billing_customers_stripe_customer_id_key UNIQUE,
    email              text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER billing_customers_set_updated_at BEFORE UPDATE ON billing_customers
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- A paid Stripe invoice (each period of a subscription) or one-time payment, with what its
-- grant gave, so a refund or a dispute of that very payment takes back its share.
CREATE TABLE invoices (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id                 bigint NOT NULL REFERENCES orders (id) ON DELETE RESTRICT,
    user_id                  uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    stripe_invoice_id        text CONSTRAINT invoices_stripe_invoice_id_key UNIQUE,
    stripe_payment_intent_id text CONSTRAINT invoices_stripe_payment_intent_id_key UNIQUE,
    number                   text,
    status                   text NOT NULL CONSTRAINT invoices_status_check
                             CHECK (status IN ('paid', 'partially_refunded', 'refunded', 'disputed')),
    amount_paid_cents        bigint NOT NULL,
    currency                 text NOT NULL,
    period_start             timestamptz,
    period_end               timestamptz,
    hosted_invoice_url       text,
    pdf_url                  text,
    credits_granted          bigint NOT NULL,
    -- Taken back by refunds (a share per refunded amount) and open or lost disputes.
    credits_refunded         bigint NOT NULL DEFAULT 0,
    created_at               timestamptz NOT NULL,
    CONSTRAINT invoices_stripe_reference CHECK
        (stripe_invoice_id IS NOT NULL OR stripe_payment_intent_id IS NOT NULL)
);
CREATE INDEX invoices_user_id_idx ON invoices (user_id, id DESC);
-- One-time payments made before this table existed, so their refunds and disputes find them.
INSERT INTO invoices (order_id, user_id, stripe_payment_intent_id, status, amount_paid_cents,
                      currency, credits_granted, credits_refunded, created_at)
SELECT id, user_id, stripe_payment_intent_id,
       CASE WHEN status = 'refunded' THEN 'refunded' ELSE 'paid' END, amount_cents, currency,
       credits, refunded_credits, COALESCE(paid_at, created_at)
FROM orders
WHERE billing_mode = 'one_time' AND provider = 'stripe' AND stripe_payment_intent_id IS NOT NULL
  AND status IN ('paid', 'refunded');

-- Which invoice a payment intent paid (`invoice_payment.paid`): charges and disputes name the
-- payment intent only. Either event may arrive first.
CREATE TABLE stripe_invoice_payments (
    stripe_payment_intent_id text PRIMARY KEY,
    stripe_invoice_id        text NOT NULL
);

-- A disputed payment: what was taken back when it opened, given back if it is won.
CREATE TABLE disputes (
    stripe_dispute_id text PRIMARY KEY,
    invoice_id        bigint NOT NULL REFERENCES invoices (id) ON DELETE RESTRICT,
    user_id           uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    status            text NOT NULL CONSTRAINT disputes_status_check
                      CHECK (status IN ('open', 'won', 'lost')),
    credits_taken     bigint NOT NULL,
    shortfall         bigint NOT NULL,
    created_at        timestamptz NOT NULL,
    closed_at         timestamptz
);
CREATE INDEX disputes_user_open_idx ON disputes (user_id) WHERE status = 'open';

-- A subscription whose payment was refunded in full or is disputed no longer sets the
-- account's limits.
ALTER TABLE orders ADD COLUMN billing_hold text
    CONSTRAINT orders_billing_hold_check CHECK (billing_hold IN ('refunded', 'disputed'));
DROP TRIGGER orders_notify_gateway ON orders;
CREATE TRIGGER orders_notify_gateway AFTER INSERT OR UPDATE OF status, subscription_status,
    current_period_end, billing_hold ON orders FOR EACH ROW EXECUTE FUNCTION notify_gateway_account();
