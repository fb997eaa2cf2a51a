-- Credits: a cached balance per account and the append-only ledger that explains it. Every
-- movement has a unique idempotency key (order, invoice, usage batch, adjustment) and moves the
-- balance in the same transaction, so sum(entries) = balance for every account at all times.
CREATE TABLE credit_accounts (
    user_id    uuid PRIMARY KEY REFERENCES users (id) ON DELETE RESTRICT,
    balance    bigint NOT NULL DEFAULT 0
               CONSTRAINT credit_accounts_balance_nonnegative CHECK (balance >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER credit_accounts_set_updated_at BEFORE UPDATE ON credit_accounts
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE ledger_entries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES credit_accounts (user_id) ON DELETE RESTRICT,
    amount          bigint NOT NULL CONSTRAINT ledger_entries_amount_check CHECK (amount <> 0),
    balance_after   bigint NOT NULL CONSTRAINT ledger_entries_balance_after_check CHECK (balance_after >= 0),
    reason          text NOT NULL,
    reference       text,
    idempotency_key text NOT NULL CONSTRAINT ledger_entries_idempotency_key_key UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_user_id_idx ON ledger_entries (user_id, id);

CREATE FUNCTION ledger_entries_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();
