-- What the gateway caches, said on the channel `meterapi_gateway` at commit, so every instance
-- learns it at once instead of at its next refresh. The payload is `<kind>:<id>`:
--   credits:<user>  more credits became available (a payment, a grant, a lease given back)
--   reclaim:<user>  an instance needs credits another instance holds unspent in its lease
--   account:<user>  the account's status or plan changed (a freeze, a subscription)
--   plans:<id>      a plan's limits changed (every account on it)
--   key:<key id>    a key was revoked
CREATE FUNCTION notify_gateway_credits() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.balance - NEW.reserved > OLD.balance - OLD.reserved THEN
        PERFORM pg_notify('meterapi_gateway', 'credits:' || NEW.user_id);
    END IF;
    RETURN NULL;
END; $$ LANGUAGE plpgsql;
CREATE TRIGGER credit_accounts_notify_gateway AFTER INSERT OR UPDATE OF balance, reserved
    ON credit_accounts FOR EACH ROW EXECUTE FUNCTION notify_gateway_credits();

CREATE FUNCTION notify_gateway_account() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('meterapi_gateway', 'account:' || NEW.user_id);
    RETURN NULL;
END; $$ LANGUAGE plpgsql;
CREATE TRIGGER orders_notify_gateway AFTER INSERT OR UPDATE OF status, subscription_status,
    current_period_end ON orders FOR EACH ROW EXECUTE FUNCTION notify_gateway_account();

CREATE FUNCTION notify_gateway_user() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('meterapi_gateway', 'account:' || NEW.id);
    RETURN NULL;
END; $$ LANGUAGE plpgsql;
CREATE TRIGGER users_notify_gateway AFTER UPDATE OF status ON users
    FOR EACH ROW EXECUTE FUNCTION notify_gateway_user();

CREATE FUNCTION notify_gateway_plan() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('meterapi_gateway', 'plans:' || NEW.id);
    RETURN NULL;
END; $$ LANGUAGE plpgsql;
CREATE TRIGGER plans_notify_gateway AFTER UPDATE ON plans
    FOR EACH ROW EXECUTE FUNCTION notify_gateway_plan();

CREATE FUNCTION notify_gateway_key() RETURNS trigger AS $$
BEGIN
    IF NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL THEN
        PERFORM pg_notify('meterapi_gateway', 'key:' || NEW.id);
    END IF;
    RETURN NULL;
END; $$ LANGUAGE plpgsql;
CREATE TRIGGER api_keys_notify_gateway AFTER UPDATE OF revoked_at ON api_keys
    FOR EACH ROW EXECUTE FUNCTION notify_gateway_key();
