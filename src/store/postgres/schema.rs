//! The PostgreSQL schema, as versioned migrations. Instants are
//! `timestamptz`, metadata is `jsonb`, and a trigger announces every
//! change on the [`CHANNEL`](super::listener::CHANNEL).

/// Versioned schema changes, applied in order, each once, under an
/// advisory lock so that instances starting together migrate once. `{s}`
/// is the quoted schema.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"CREATE TABLE {s}.keyward_keys (
        id TEXT COLLATE "C" PRIMARY KEY,
        prefix TEXT NOT NULL,
        hash BYTEA NOT NULL,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        permissions TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ,
        revoked_at TIMESTAMPTZ,
        last_used_at TIMESTAMPTZ,
        metadata JSONB,
        version BIGINT NOT NULL,
        rate_limit_max BIGINT,
        rate_limit_per_ms BIGINT,
        remaining BIGINT,
        refill_amount BIGINT,
        refill_every_secs BIGINT,
        last_refill_at TIMESTAMPTZ,
        inactivity_deadline TIMESTAMPTZ,
        inactivity_before_secs BIGINT,
        expiry_deadline TIMESTAMPTZ,
        expiry_before_secs BIGINT,
        rolled_from TEXT,
        -- Finite and within what every client can decode (no 'infinity').
        CONSTRAINT keyward_keys_times CHECK (
            created_at BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
            AND coalesce(expires_at, created_at) BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
            AND coalesce(revoked_at, created_at) BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
            AND coalesce(last_used_at, created_at) BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
            AND coalesce(last_refill_at, created_at) BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
            AND coalesce(inactivity_deadline, created_at) BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
            AND coalesce(expiry_deadline, created_at) BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
        )
    );
    CREATE INDEX keyward_keys_tenant ON {s}.keyward_keys (tenant, id);
    CREATE INDEX keyward_keys_expires ON {s}.keyward_keys (expires_at)
        WHERE expires_at IS NOT NULL;
    CREATE INDEX keyward_keys_activity
        ON {s}.keyward_keys ((coalesce(last_used_at, created_at)));
    CREATE INDEX keyward_keys_revoked ON {s}.keyward_keys (revoked_at)
        WHERE revoked_at IS NOT NULL;
    -- Every change a verify could see is announced, whoever makes it (an
    -- operator's UPDATE too); only last-use and usage-count bookkeeping,
    -- which caches do not hold, is not.
    CREATE FUNCTION {s}.keyward_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':*');
        ELSIF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || OLD.id);
        ELSIF TG_OP = 'INSERT' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || NEW.id);
        ELSIF ROW(NEW.id, NEW.prefix, NEW.hash, NEW.tenant, NEW.name, NEW.permissions,
                  NEW.created_by, NEW.created_at, NEW.expires_at, NEW.revoked_at,
                  NEW.metadata, NEW.version, NEW.rate_limit_max, NEW.rate_limit_per_ms,
                  NEW.remaining IS NULL, NEW.refill_amount, NEW.refill_every_secs,
                  NEW.inactivity_deadline, NEW.inactivity_before_secs,
                  NEW.expiry_deadline, NEW.expiry_before_secs, NEW.rolled_from)
              IS DISTINCT FROM
              ROW(OLD.id, OLD.prefix, OLD.hash, OLD.tenant, OLD.name, OLD.permissions,
                  OLD.created_by, OLD.created_at, OLD.expires_at, OLD.revoked_at,
                  OLD.metadata, OLD.version, OLD.rate_limit_max, OLD.rate_limit_per_ms,
                  OLD.remaining IS NULL, OLD.refill_amount, OLD.refill_every_secs,
                  OLD.inactivity_deadline, OLD.inactivity_before_secs,
                  OLD.expiry_deadline, OLD.expiry_before_secs, OLD.rolled_from) THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || OLD.id);
            IF NEW.id IS DISTINCT FROM OLD.id THEN
                PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || NEW.id);
            END IF;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER keyward_keys_notify
        AFTER INSERT OR UPDATE OR DELETE ON {s}.keyward_keys
        FOR EACH ROW EXECUTE FUNCTION {s}.keyward_notify();
    CREATE TRIGGER keyward_keys_notify_truncate
        AFTER TRUNCATE ON {s}.keyward_keys
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.keyward_notify();"#,
    ),
    (2, MIGRATION_2),
];

/// `rolled_to` marks a key replaced by a roll (it can be neither
/// reactivated nor rolled again, and draws on its successor's uses); the
/// change feed announces it like every other column a verify reads.
/// Keys rolled before name the newest key rolled from them.
const MIGRATION_2: &str = r#"ALTER TABLE {s}.keyward_keys ADD COLUMN rolled_to TEXT;
    UPDATE {s}.keyward_keys AS o SET rolled_to = n.id
        FROM (SELECT DISTINCT ON (rolled_from) rolled_from, id FROM {s}.keyward_keys
              WHERE rolled_from IS NOT NULL ORDER BY rolled_from, created_at DESC, id DESC) AS n
        WHERE n.rolled_from = o.id;
    CREATE OR REPLACE FUNCTION {s}.keyward_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':*');
        ELSIF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || OLD.id);
        ELSIF TG_OP = 'INSERT' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || NEW.id);
        ELSIF ROW(NEW.id, NEW.prefix, NEW.hash, NEW.tenant, NEW.name, NEW.permissions,
                  NEW.created_by, NEW.created_at, NEW.expires_at, NEW.revoked_at,
                  NEW.metadata, NEW.version, NEW.rate_limit_max, NEW.rate_limit_per_ms,
                  NEW.remaining IS NULL, NEW.refill_amount, NEW.refill_every_secs,
                  NEW.inactivity_deadline, NEW.inactivity_before_secs,
                  NEW.expiry_deadline, NEW.expiry_before_secs, NEW.rolled_from,
                  NEW.rolled_to)
              IS DISTINCT FROM
              ROW(OLD.id, OLD.prefix, OLD.hash, OLD.tenant, OLD.name, OLD.permissions,
                  OLD.created_by, OLD.created_at, OLD.expires_at, OLD.revoked_at,
                  OLD.metadata, OLD.version, OLD.rate_limit_max, OLD.rate_limit_per_ms,
                  OLD.remaining IS NULL, OLD.refill_amount, OLD.refill_every_secs,
                  OLD.inactivity_deadline, OLD.inactivity_before_secs,
                  OLD.expiry_deadline, OLD.expiry_before_secs, OLD.rolled_from,
                  OLD.rolled_to) THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || OLD.id);
            IF NEW.id IS DISTINCT FROM OLD.id THEN
                PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || NEW.id);
            END IF;
        END IF;
        RETURN NULL;
    END $$;"#;
