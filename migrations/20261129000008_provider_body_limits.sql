-- A provider's response body is bounded too, not only the time to its headers: no chunk for
-- body_idle_ms, or the whole call past body_deadline_ms, or more than max_response_bytes ends
-- the call (50201 when nothing reached the client yet).
ALTER TABLE providers
    ADD COLUMN body_idle_ms integer NOT NULL DEFAULT 30000
        CONSTRAINT providers_body_idle_check CHECK (body_idle_ms BETWEEN 1 AND 600000),
    ADD COLUMN body_deadline_ms integer NOT NULL DEFAULT 300000
        CONSTRAINT providers_body_deadline_check CHECK (body_deadline_ms BETWEEN 1 AND 3600000),
    ADD COLUMN max_response_bytes bigint NOT NULL DEFAULT 104857600
        CONSTRAINT providers_max_response_check CHECK (max_response_bytes BETWEEN 1 AND 17179869184);
