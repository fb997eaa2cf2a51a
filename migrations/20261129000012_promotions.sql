-- Promotions (issue 12): a plan may let Checkout take Stripe promotion codes, and an order
-- records what was actually paid and the discount.
ALTER TABLE plans ADD COLUMN allow_promotion_codes boolean NOT NULL DEFAULT false;
ALTER TABLE orders
    ADD COLUMN amount_paid_cents bigint,
    ADD COLUMN discount_cents bigint NOT NULL DEFAULT 0;
-- Orders paid before: at their price.
UPDATE orders SET amount_paid_cents = amount_cents WHERE status IN ('paid', 'cancelled', 'refunded');
