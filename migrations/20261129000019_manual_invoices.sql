-- Orders paid outside Stripe (an admin's manual orders, plan redemption codes) are listed with
-- the invoices too: such a row names no Stripe object.
ALTER TABLE invoices DROP CONSTRAINT invoices_stripe_reference;
