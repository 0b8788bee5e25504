//! The PostgreSQL schema, as versioned migrations. Instants are
//! `timestamptz`, metadata is `jsonb`, and a trigger announces every
//! change on the [`CHANNEL`](super::listener::CHANNEL).

use crate::store::sql::COLUMNS;

/// The table, its indexes and the change feed's trigger. `{s}` is the
/// quoted schema, `{notify}` the trigger function. Versioned schema
/// changes are applied in order, each once, under an advisory lock so
/// that instances starting together migrate once.
const MIGRATION_1: &str = r#"CREATE TABLE {s}.keyward_keys (
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
    {notify}
    CREATE TRIGGER keyward_keys_notify
        AFTER INSERT OR UPDATE OR DELETE ON {s}.keyward_keys
        FOR EACH ROW EXECUTE FUNCTION {s}.keyward_notify();
    CREATE TRIGGER keyward_keys_notify_truncate
        AFTER TRUNCATE ON {s}.keyward_keys
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.keyward_notify();"#;

/// `rolled_to` marks a key replaced by a roll (it can be neither
/// reactivated nor rolled again, and draws on its successor's uses); the
/// change feed announces it like every other column a verify reads.
/// Keys rolled before name the newest key rolled from them.
const MIGRATION_2: &str = r#"ALTER TABLE {s}.keyward_keys ADD COLUMN rolled_to TEXT;
    UPDATE {s}.keyward_keys AS o SET rolled_to = n.id
        FROM (SELECT DISTINCT ON (rolled_from) rolled_from, id FROM {s}.keyward_keys
              WHERE rolled_from IS NOT NULL ORDER BY rolled_from, created_at DESC, id DESC) AS n
        WHERE n.rolled_from = o.id;
    {notify}"#;

/// The audit trail (`PostgresStore::audit_trail`): `seq` is never
/// reused, so a page cursor stays valid after pruning. Not watched by the
/// change feed: no cache holds it.
const MIGRATION_3: &str = r#"CREATE TABLE {s}.keyward_audit (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at TIMESTAMPTZ NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT,
        actor TEXT,
        tenant TEXT,
        key_id TEXT,
        key_prefix TEXT,
        related_key_id TEXT
    );
    CREATE INDEX keyward_audit_tenant ON {s}.keyward_audit (tenant, seq);
    CREATE INDEX keyward_audit_key ON {s}.keyward_audit (key_id, seq);
    CREATE INDEX keyward_audit_related ON {s}.keyward_audit (related_key_id, seq)
        WHERE related_key_id IS NOT NULL;
    CREATE INDEX keyward_audit_at ON {s}.keyward_audit (at);"#;

/// Access rules and spent credits on keys; the roles defined at run
/// time, whose every change is announced as `schema:*` (any cached key
/// may hold a role). `credits_spent` is bookkeeping, not watched.
const MIGRATION_4: &str = r#"ALTER TABLE {s}.keyward_keys
        ADD COLUMN allowed_ips TEXT,
        ADD COLUMN not_before TIMESTAMPTZ,
        ADD COLUMN roles TEXT,
        ADD COLUMN limits TEXT,
        ADD COLUMN credits_spent BIGINT NOT NULL DEFAULT 0,
        ADD CONSTRAINT keyward_keys_not_before CHECK (
            coalesce(not_before, created_at) BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
        );
    CREATE TABLE {s}.keyward_roles (
        name TEXT PRIMARY KEY,
        permissions TEXT NOT NULL
    );
    CREATE OR REPLACE FUNCTION {s}.keyward_roles_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':*');
        RETURN NULL;
    END $$;
    CREATE TRIGGER keyward_roles_notify
        AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {s}.keyward_roles
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.keyward_roles_notify();
    {notify}"#;

/// Leaked keys marked exposed (an update bumps `version`, which the
/// trigger watches, so it is not rewritten); a detail in the audit
/// trail; webhook endpoints and the outbox of deliveries, which no cache
/// holds.
const MIGRATION_5: &str = r#"ALTER TABLE {s}.keyward_keys ADD COLUMN exposed_at TIMESTAMPTZ;
    ALTER TABLE {s}.keyward_audit ADD COLUMN detail TEXT;
    CREATE TABLE {s}.keyward_webhook_endpoints (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        event_types TEXT NOT NULL,
        description TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX keyward_webhook_endpoints_tenant ON {s}.keyward_webhook_endpoints (tenant, id);
    CREATE TABLE {s}.keyward_webhook_outbox (
        id TEXT PRIMARY KEY,
        message_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        next_attempt_at TIMESTAMPTZ NOT NULL,
        retrying_since TIMESTAMPTZ NOT NULL,
        lease_owner TEXT,
        lease_until TIMESTAMPTZ,
        last_error TEXT
    );
    CREATE INDEX keyward_webhook_outbox_due
        ON {s}.keyward_webhook_outbox (state, next_attempt_at);
    CREATE INDEX keyward_webhook_outbox_endpoint ON {s}.keyward_webhook_outbox (endpoint_id);"#;

/// The columns whose change a verify could see, as the notify trigger
/// compares them, from the first to `last`: every column but the
/// bookkeeping (`last_used_at`, `last_refill_at`, and the count in
/// `remaining`, of which only being usage-limited counts).
fn watched(last: &str) -> Vec<String> {
    let end = COLUMNS
        .iter()
        .position(|(c, _)| *c == last)
        .map(|i| i + 1)
        .unwrap_or_else(|| unreachable!("no column {last}"));
    COLUMNS[..end]
        .iter()
        .filter(|(c, _)| !matches!(*c, "last_used_at" | "last_refill_at"))
        .map(|(c, _)| match *c {
            "remaining" => "remaining IS NULL".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The migrations for the quoted schema `s`, in order.
pub(super) fn migrations(s: &str) -> Vec<(i64, String)> {
    // Each version that changes the keys table rewrites the trigger to
    // watch the columns it has; the audit table is not watched.
    [
        (1, MIGRATION_1, Some("rolled_from")),
        (2, MIGRATION_2, Some("rolled_to")),
        (3, MIGRATION_3, None),
        (4, MIGRATION_4, Some("limits")),
        (5, MIGRATION_5, None),
    ]
    .into_iter()
    .map(|(version, sql, last)| {
        let sql = match last {
            Some(last) => sql.replace("{notify}", &notify_function(&watched(last))),
            None => sql.to_string(),
        };
        (version, sql.replace("{s}", s))
    })
    .collect()
}

/// The trigger function announcing, on the channel, every insert and
/// delete and every update that changes a `watched` column, as
/// `schema:id` (`schema:*` for a truncate).
fn notify_function(watched: &[String]) -> String {
    let row = |side: &str| {
        let cols: Vec<String> = watched.iter().map(|c| format!("{side}.{c}")).collect();
        format!("ROW({})", cols.join(", "))
    };
    format!(
        r#"CREATE OR REPLACE FUNCTION {{s}}.keyward_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':*');
        ELSIF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || OLD.id);
        ELSIF TG_OP = 'INSERT' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || NEW.id);
        ELSIF {new} IS DISTINCT FROM {old} THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || OLD.id);
            IF NEW.id IS DISTINCT FROM OLD.id THEN
                PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || NEW.id);
            END IF;
        END IF;
        RETURN NULL;
    END $$;"#,
        new = row("NEW"),
        old = row("OLD"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_schema_watches_its_own_columns() {
        let m = migrations("\"auth\"");
        assert_eq!(
            m.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert!(!m[4].1.contains("{s}") && m[4].1.contains("\"auth\".keyward_webhook_outbox"));
        assert!(m[3].1.contains("NEW.allowed_ips") && m[3].1.contains("OLD.limits"));
        assert!(!m[3].1.contains("credits_spent IS") && !m[3].1.contains("OLD.credits_spent"));
        assert!(!m[2].1.contains("{s}") && m[2].1.contains("\"auth\".keyward_audit"));
        assert!(
            !m[2].1.contains("keyward_notify"),
            "the audit table is not watched"
        );
        for (_, sql) in &m[..2] {
            assert!(!sql.contains("{s}") && !sql.contains("{notify}"), "{sql}");
            assert!(sql.contains("\"auth\".keyward_notify()"));
            assert!(sql.contains("OLD.remaining IS NULL") && sql.contains("OLD.rolled_from"));
        }
        assert!(!m[0].1.contains("rolled_to"), "schema 1 has no rolled_to");
        assert!(m[1].1.contains("NEW.rolled_to") && m[1].1.contains("OLD.rolled_to"));
        // Pinned: what each schema version's trigger watches never changes.
        let one = [
            "id",
            "prefix",
            "hash",
            "tenant",
            "name",
            "permissions",
            "created_by",
            "created_at",
            "expires_at",
            "revoked_at",
            "metadata",
            "version",
            "rate_limit_max",
            "rate_limit_per_ms",
            "remaining IS NULL",
            "refill_amount",
            "refill_every_secs",
            "inactivity_deadline",
            "inactivity_before_secs",
            "expiry_deadline",
            "expiry_before_secs",
            "rolled_from",
        ];
        assert_eq!(watched("rolled_from"), one);
        assert_eq!(watched("rolled_to")[..22], one);
        assert_eq!(watched("rolled_to")[22], "rolled_to");
        assert_eq!(watched("rolled_to").len(), 23);
    }
}
