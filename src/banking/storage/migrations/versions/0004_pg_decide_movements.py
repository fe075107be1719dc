"""PostgreSQL: banking_decide_movements, a group of movements decided in one call

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Issue 14, item 1: on PostgreSQL the store decides a whole group of debits, credits and
transfers (``banking.storage.pg_movements``) with one call of this function instead of about
eight statements per movement. The rules are the ledger's (``banking.ledger.decisions``,
DESIGN.md section 4); Python checks what needs only the accounts and the actor, and this
function does what needs the locked balances, in item order:

1. lock the balance row of every account of the group, in account-id order (no deadlock);
2. per item: a used idempotency key (an initiating leg with that ``(account_id,
   reference_id)``, one inserted earlier in this call included) -> ``key_used``, nothing
   written; a decline decided in Python (an inactive account) -> a failed leg; a debit or a
   transfer's source only if that much is available (else a failed leg, INSUFFICIENT_FUNDS);
   a credit or a transfer's destination only while the balance stays below 10^16, else
   ``over_limit`` with nothing written: every check comes before the item's first write, so
   no exception block (subtransaction) is needed;
3. the legs and their journal rows (``transaction_logs``, the metadata
   ``banking.ledger.recording.journal_entry`` makes), and one row per item with what Python
   needs to build the legs and their outbox events.

SQLite has no such function: its store decides with the ledger's own code (``decide_each``).
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SIGNATURE = (
    "banking_decide_movements(text[], uuid[], uuid[], numeric[], uuid[], uuid[], uuid[], "
    "uuid[], text[], text[], uuid[], text[], text[], text[], text[], text[], text[], "
    "timestamptz[])"
)

# The argument arrays are parallel, one element per item (1-based, in item order).
_FUNCTION = """
CREATE OR REPLACE FUNCTION banking_decide_movements(
    p_kinds text[],              -- 'debit', 'credit' or 'transfer_out'
    p_account_ids uuid[],        -- the debited / credited account, a transfer's source
    p_counterparty_ids uuid[],   -- a transfer's destination; NULL otherwise
    p_amounts numeric[],         -- positive, two decimal places
    p_leg_ids uuid[],            -- the initiating leg's id
    p_in_leg_ids uuid[],         -- a transfer's receiving leg's id; NULL otherwise
    p_log_ids uuid[],            -- the journal row of the initiating leg
    p_in_log_ids uuid[],         -- the journal row of the receiving leg; NULL otherwise
    p_reference_ids text[],      -- the idempotency key (with the account)
    p_fingerprints text[],       -- the request's fingerprint, kept with the leg
    p_created_by uuid[],         -- the actor's user id, kept with the leg
    p_descriptions text[],
    p_currencies text[],
    p_trace_ids text[],          -- into the journal's metadata
    p_decline_codes text[],      -- a decline decided before the balances (inactive); or NULL
    p_decline_reasons text[],
    p_usernames text[],          -- the journal's created_by
    p_created_at timestamptz[]   -- the legs' and journal's time, the balances' last_updated
) RETURNS TABLE (
    r_status text,               -- 'completed', 'failed', 'key_used' or 'over_limit'
    r_failure_code text,
    r_failure_reason text,
    r_available_after numeric,   -- the (source) account's balance and version after the leg
    r_version_after bigint,
    r_in_available_after numeric, -- a completed transfer's destination
    r_in_version_after bigint
)
LANGUAGE plpgsql
AS $$
DECLARE
    balance_limit CONSTANT numeric := 10000000000000000;
    i integer;
    v_kind text;
    v_account uuid;
    v_counterparty uuid;
    v_amount numeric;
    v_at timestamptz;
    v_available numeric;
    v_current numeric;
BEGIN
    PERFORM 1 FROM balances
     WHERE account_id = ANY (p_account_ids || p_counterparty_ids)
     ORDER BY account_id
       FOR UPDATE;

    FOR i IN 1 .. coalesce(array_length(p_kinds, 1), 0) LOOP
        v_kind := p_kinds[i];
        v_account := p_account_ids[i];
        v_counterparty := p_counterparty_ids[i];
        v_amount := round(p_amounts[i], 2);
        v_at := p_created_at[i];
        r_status := NULL;
        r_failure_code := p_decline_codes[i];
        r_failure_reason := p_decline_reasons[i];
        r_available_after := NULL;
        r_version_after := NULL;
        r_in_available_after := NULL;
        r_in_version_after := NULL;

        IF v_kind NOT IN ('debit', 'credit', 'transfer_out')
           OR (v_kind = 'transfer_out') <> (v_counterparty IS NOT NULL) THEN
            RAISE EXCEPTION 'item %: no movement % with counterparty %', i, v_kind, v_counterparty
                USING ERRCODE = 'invalid_parameter_value';
        END IF;

        IF EXISTS (
            SELECT 1 FROM transactions
             WHERE account_id = v_account
               AND reference_id = p_reference_ids[i]
               AND transaction_type <> 'transfer_in'
        ) THEN
            r_status := 'key_used';
            r_failure_code := NULL;
            r_failure_reason := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;

        IF r_failure_code IS NULL THEN
            IF v_kind = 'debit' THEN
                UPDATE balances
                   SET current_balance = current_balance - v_amount,
                       available_balance = available_balance - v_amount,
                       version = version + 1,
                       last_updated = v_at
                 WHERE account_id = v_account AND available_balance >= v_amount
                RETURNING available_balance, version INTO r_available_after, r_version_after;
                IF NOT FOUND THEN
                    r_failure_code := 'INSUFFICIENT_FUNDS';
                    r_failure_reason := 'insufficient funds';
                END IF;
            ELSIF v_kind = 'credit' THEN
                UPDATE balances
                   SET current_balance = current_balance + v_amount,
                       available_balance = available_balance + v_amount,
                       version = version + 1,
                       last_updated = v_at
                 WHERE account_id = v_account AND current_balance < balance_limit - v_amount
                RETURNING available_balance, version INTO r_available_after, r_version_after;
                IF NOT FOUND THEN
                    r_status := 'over_limit';
                    RETURN NEXT;
                    CONTINUE;
                END IF;
            ELSE
                SELECT available_balance INTO v_available
                  FROM balances WHERE account_id = v_account;
                SELECT current_balance INTO v_current
                  FROM balances WHERE account_id = v_counterparty;
                IF v_available IS NULL OR v_current IS NULL THEN
                    RAISE EXCEPTION 'item %: a transfer between accounts without balances', i
                        USING ERRCODE = 'no_data_found';
                END IF;
                IF v_available < v_amount THEN
                    r_failure_code := 'INSUFFICIENT_FUNDS';
                    r_failure_reason := 'insufficient funds';
                ELSIF v_current >= balance_limit - v_amount THEN
                    r_status := 'over_limit';
                    RETURN NEXT;
                    CONTINUE;
                ELSE
                    UPDATE balances
                       SET current_balance = current_balance - v_amount,
                           available_balance = available_balance - v_amount,
                           version = version + 1,
                           last_updated = v_at
                     WHERE account_id = v_account
                    RETURNING available_balance, version
                         INTO r_available_after, r_version_after;
                    UPDATE balances
                       SET current_balance = current_balance + v_amount,
                           available_balance = available_balance + v_amount,
                           version = version + 1,
                           last_updated = v_at
                     WHERE account_id = v_counterparty
                    RETURNING available_balance, version
                         INTO r_in_available_after, r_in_version_after;
                END IF;
            END IF;
        END IF;

        r_status := CASE WHEN r_failure_code IS NULL THEN 'completed' ELSE 'failed' END;
        INSERT INTO transactions (
            transaction_id, account_id, transaction_type, amount, currency, description,
            reference_id, created_at, status, related_transaction_id, counterparty_account_id,
            failure_code, failure_reason, available_balance_after, balance_version_after,
            request_fingerprint, created_by, hold_reason
        ) VALUES (
            p_leg_ids[i], v_account, v_kind, v_amount, p_currencies[i], p_descriptions[i],
            p_reference_ids[i], v_at, r_status,
            CASE WHEN r_status = 'completed' THEN p_in_leg_ids[i] END, v_counterparty,
            r_failure_code, r_failure_reason, r_available_after, r_version_after,
            p_fingerprints[i], p_created_by[i], NULL
        );
        INSERT INTO transaction_logs (
            log_id, transaction_id, event_type, metadata, created_at, created_by
        ) VALUES (
            p_log_ids[i], p_leg_ids[i], r_status,
            CASE WHEN r_status = 'completed' THEN
                json_build_object(
                    'amount', v_amount::text,
                    'trace_id', p_trace_ids[i],
                    'available_balance_after', r_available_after::text)
            ELSE
                json_build_object(
                    'amount', v_amount::text,
                    'trace_id', p_trace_ids[i],
                    'failure_code', r_failure_code,
                    'failure_reason', r_failure_reason)
            END,
            v_at, p_usernames[i]
        );

        IF v_kind = 'transfer_out' AND r_status = 'completed' THEN
            INSERT INTO transactions (
                transaction_id, account_id, transaction_type, amount, currency, description,
                reference_id, created_at, status, related_transaction_id,
                counterparty_account_id, failure_code, failure_reason, available_balance_after,
                balance_version_after, request_fingerprint, created_by, hold_reason
            ) VALUES (
                p_in_leg_ids[i], v_counterparty, 'transfer_in', v_amount, p_currencies[i],
                p_descriptions[i], p_reference_ids[i], v_at, 'completed', p_leg_ids[i],
                v_account, NULL, NULL, r_in_available_after, r_in_version_after,
                p_fingerprints[i], p_created_by[i], NULL
            );
            INSERT INTO transaction_logs (
                log_id, transaction_id, event_type, metadata, created_at, created_by
            ) VALUES (
                p_in_log_ids[i], p_in_leg_ids[i], 'completed',
                json_build_object(
                    'amount', v_amount::text,
                    'trace_id', p_trace_ids[i],
                    'available_balance_after', r_in_available_after::text),
                v_at, p_usernames[i]
            );
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
