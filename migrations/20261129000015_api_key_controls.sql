-- API-key controls (issue 14): an expiry, a per-second rate below the plan's, the providers a
-- key may call and the client addresses it may come from; rotation keeps the previous secret
-- working for a grace period; the last client address is kept with `last_used_at`.
ALTER TABLE api_keys
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN rps_limit integer
        CONSTRAINT api_keys_rps_limit_check CHECK (rps_limit BETWEEN 1 AND 1000000),
    ADD COLUMN providers text[],
    ADD COLUMN allowed_ips text[],
    ADD COLUMN previous_key_hash bytea CONSTRAINT api_keys_previous_key_hash_key UNIQUE,
    ADD COLUMN previous_expires_at timestamptz,
    ADD COLUMN last_ip text,
    -- When the controls or the secret last changed: the gateway reloads a key whose value moved.
    ADD COLUMN changed_at timestamptz NOT NULL DEFAULT now();

CREATE OR REPLACE FUNCTION notify_gateway_key() RETURNS trigger AS $$
BEGIN
    IF (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
       OR NEW.changed_at IS DISTINCT FROM OLD.changed_at THEN
        PERFORM pg_notify('meterapi_gateway', 'key:' || NEW.id);
    END IF;
    RETURN NULL;
END; $$ LANGUAGE plpgsql;
DROP TRIGGER api_keys_notify_gateway ON api_keys;
CREATE TRIGGER api_keys_notify_gateway AFTER UPDATE OF revoked_at, changed_at
    ON api_keys FOR EACH ROW EXECUTE FUNCTION notify_gateway_key();
