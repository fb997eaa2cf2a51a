-- Shared by every table that keeps an `updated_at` column: set it on each update, so no
-- query has to remember to.
CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
