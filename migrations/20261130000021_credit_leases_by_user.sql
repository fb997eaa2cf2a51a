-- What other instances hold of an account is read by every batch of reservations
-- (`WHERE user_id = ANY(...)`); without this index each batch scanned every lease, which at
-- 10,000 active accounts was most of PostgreSQL's work (issue 18).
CREATE INDEX credit_leases_user_id_idx ON credit_leases (user_id);
