-- Account deletion (issue 14): the user row stays as an anonymous tombstone that orders and the
-- ledger keep pointing at; its address, password, sessions' addresses and agents, devices and
-- Stripe customer link are erased.
ALTER TABLE users ADD COLUMN deleted_at timestamptz;
ALTER TABLE users DROP CONSTRAINT users_frozen_reason_check;
ALTER TABLE users ADD CONSTRAINT users_frozen_reason_check
    CHECK (frozen_reason IN ('admin', 'dispute', 'deleted'));
