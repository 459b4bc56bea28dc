-- A role for litellm-exporter that can read exactly the tables it reads, and write nothing.
-- Run it as a superuser (or the owner of LiteLLM's tables) in LiteLLM's database:
--   psql "$DATABASE_URL" -f docs/least-privilege.sql
-- then give the role a password (\password litellm_exporter) and use it in database.dsn.
-- It is safe to run again, for instance after LiteLLM adds a table the exporter reads.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'litellm_exporter') THEN
        CREATE ROLE litellm_exporter LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO litellm_exporter', current_database());
END
$$;

-- Every transaction read-only by default, on top of the exporter's own read-only transactions
-- and of the grants below.
ALTER ROLE litellm_exporter SET default_transaction_read_only = on;
ALTER ROLE litellm_exporter SET statement_timeout = '30s';

GRANT USAGE ON SCHEMA public TO litellm_exporter;

-- The tables litellm-exporter reads; a table an older LiteLLM does not have yet is skipped.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'LiteLLM_DailyUserSpend', 'LiteLLM_DailyTeamSpend', 'LiteLLM_DailyOrganizationSpend',
        'LiteLLM_DailyEndUserSpend', 'LiteLLM_DailyTagSpend',
        'LiteLLM_SpendLogs',
        'LiteLLM_VerificationToken', 'LiteLLM_DeletedVerificationToken',
        'LiteLLM_TeamTable', 'LiteLLM_DeletedTeamTable', 'LiteLLM_TeamMembership',
        'LiteLLM_UserTable', 'LiteLLM_OrganizationTable', 'LiteLLM_EndUserTable',
        'LiteLLM_TagTable', 'LiteLLM_BudgetTable',
        'LiteLLM_DailyAgentSpend', 'LiteLLM_DailyRequestErrors', 'LiteLLM_DailyGatewayRequests',
        'LiteLLM_DailyGatewayFailedRequests', 'LiteLLM_DailyModelUsage', 'LiteLLM_DailyToolSpend',
        'LiteLLM_DailyGuardrailMetrics', 'LiteLLM_DailyPolicyMetrics', 'LiteLLM_DailyGuardrailUsageUnits',
        'LiteLLM_BudgetWindowSpend', 'LiteLLM_ProxyWorkerHeartbeat', 'LiteLLM_HealthCheckTable',
        -- Prisma's migration history: which LiteLLM schema this is, for the status page.
        '_prisma_migrations'
    ] LOOP
        IF to_regclass(format('%I', t)) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT ON TABLE %I TO litellm_exporter', t);
        END IF;
    END LOOP;
END
$$;
