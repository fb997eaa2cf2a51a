-- Accounts and their login sessions.
CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'user'
                  CONSTRAINT users_role_check CHECK (role IN ('user', 'admin')),
    status        text NOT NULL DEFAULT 'active'
                  CONSTRAINT users_status_check CHECK (status IN ('active', 'frozen')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- Addresses are stored lower-cased; the index makes uniqueness case-insensitive regardless.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE TRIGGER users_set_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Only the SHA-256 of a session token is stored. A deleted user leaves the session behind
-- with no user, which answers 40402 rather than passing for an unknown token.
CREATE TABLE sessions (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid REFERENCES users (id) ON DELETE SET NULL,
    token_hash bytea NOT NULL CONSTRAINT sessions_token_hash_key UNIQUE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
