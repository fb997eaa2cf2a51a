-- Plan changes of a subscription (issue 12): the plan asked for waits on the order until Stripe
-- confirms it (an upgrade when the subscription is updated, a downgrade at the next renewal);
-- an upgrade's proration invoice grants the difference in credits in proportion to what it
-- charged of the difference in price.
ALTER TABLE orders
    ADD COLUMN pending_plan_id bigint REFERENCES plans (id) ON DELETE RESTRICT,
    ADD COLUMN pending_change text
        CONSTRAINT orders_pending_change_check CHECK (pending_change IN ('upgrade', 'downgrade')),
    ADD COLUMN upgrade_credits bigint NOT NULL DEFAULT 0,
    ADD COLUMN upgrade_amount_cents bigint NOT NULL DEFAULT 0;
-- A changed plan changes the account's limits.
DROP TRIGGER orders_notify_gateway ON orders;
CREATE TRIGGER orders_notify_gateway AFTER INSERT OR UPDATE OF status, subscription_status,
    current_period_end, billing_hold, plan_id ON orders
    FOR EACH ROW EXECUTE FUNCTION notify_gateway_account();
