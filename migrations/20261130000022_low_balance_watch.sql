-- Every instance compares balances with low-balance thresholds every two seconds; without
-- these the two statements scanned every user (and joined every credit account), a cost that
-- grew with all accounts rather than with those that set an alert (issue 18's capacity model).
-- Partial indexes keep each check to the accounts it concerns: armed alerts, and alerts sent.
CREATE INDEX users_low_balance_armed_idx ON users (id)
    WHERE low_balance_alert IS NOT NULL AND NOT low_balance_notified;
CREATE INDEX users_low_balance_notified_idx ON users (id) WHERE low_balance_notified;
