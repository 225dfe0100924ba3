-- housekeeper: log purge.
--
-- Every database operation of the jobs is a function returning jsonb, so the
-- direct Postgres transport (SELECT fn(...)) and the Supabase transport
-- (POST /rest/v1/rpc/fn) run exactly the same SQL.
--
-- The functions have a fixed search_path and are executable by service_role
-- only: a leaked anon key cannot purge anything. The purge functions run with
-- the caller's own rights (SECURITY INVOKER), so they delete nothing the
-- caller could not delete itself; they also refuse the catalogs and
-- housekeeper's own schema, and a cutoff less than a day old.

create schema if not exists housekeeper;
revoke all on schema housekeeper from public;

-- Which of the named functions are missing, so that the jobs and `health?deep=1`
-- can name the migration to apply instead of failing half-way.
create or replace function public.housekeeper_missing_functions(p_names text[])
returns jsonb
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(jsonb_agg(name order by name), '[]'::jsonb)
  from unnest(p_names) as name
  where not exists (
    select 1
    from pg_proc p
    join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public' and p.proname = name
  );
$$;

-- Resolve the purge target: the table, the column's type, whether an index
-- leads with the column, and the statement timeout this role runs under.
create or replace function public.housekeeper_purge_prepare(
  p_schema text,
  p_table text,
  p_column text
)
returns jsonb
language plpgsql
stable
security invoker
set search_path = pg_catalog, pg_temp
as $$
declare
  v_rel regclass;
  v_type text;
  v_attnum smallint;
  v_indexed boolean;
begin
  v_rel := to_regclass(format('%I.%I', p_schema, p_table));
  if v_rel is null then
    raise exception using
      errcode = '42P01',
      message = format('table %I.%I does not exist', p_schema, p_table);
  end if;

  select a.attnum, format_type(a.atttypid, a.atttypmod)
    into v_attnum, v_type
    from pg_attribute a
   where a.attrelid = v_rel and a.attname = p_column
     and a.attnum > 0 and not a.attisdropped;
  if v_attnum is null then
    raise exception using
      errcode = '42703',
      message = format('column %I does not exist in %s', p_column, v_rel);
  end if;
  if v_type not like 'timestamp%' then
    raise exception using
      errcode = '42804',
      message = format('column %I of %s is %s; expected timestamptz or timestamp',
                       p_column, v_rel, v_type);
  end if;

  select exists (
    select 1 from pg_index i
     where i.indrelid = v_rel and i.indkey[0] = v_attnum and i.indpred is null
  ) into v_indexed;

  return jsonb_build_object(
    'relation', v_rel::text,
    'column_type', v_type,
    'with_time_zone', v_type like '%with time zone',
    'indexed', v_indexed,
    'statement_timeout_ms',
      extract(epoch from current_setting('statement_timeout')::interval) * 1000
  );
end;
$$;

-- Delete (or, dry, count) at most p_limit rows strictly older than p_cutoff,
-- oldest first, starting at p_after (inclusive). One call is one short
-- transaction; the caller loops, passing back `last` as the next p_after, so
-- each index scan starts where the previous batch ended instead of wading
-- through the dead entries it left behind.
--
-- A naive `timestamp` column holds UTC: the cutoff is converted to UTC
-- explicitly, never through the session time zone.
create or replace function public.housekeeper_purge_batch(
  p_schema text,
  p_table text,
  p_column text,
  p_cutoff timestamptz,
  p_after timestamptz,
  p_limit integer,
  p_dry_run boolean default false
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
-- Never queue behind a lock for long: writers would queue behind the purge.
set lock_timeout = '2s'
as $$
declare
  v_rel regclass;
  v_naive boolean;
  v_cut text;
  v_after text;
  v_bnd text;
  v_count bigint;
  v_last timestamptz;
  v_bound timestamptz;
begin
  if p_limit is null or p_limit < 1 or p_limit > 100000 then
    raise exception using errcode = '22023', message = 'p_limit must be between 1 and 100000';
  end if;
  if p_cutoff is null then
    raise exception using errcode = '22004', message = 'p_cutoff must not be null';
  end if;
  -- Retention is at least one day; an hour of slack absorbs clock skew
  -- between the job's host and the database.
  if p_cutoff > now() - interval '23 hours' then
    raise exception using
      errcode = '22023',
      message = 'p_cutoff must be at least one day in the past';
  end if;
  if p_schema like 'pg\_%' or p_schema in ('information_schema', 'housekeeper') then
    raise exception using
      errcode = '42501',
      message = format('schema %I holds no log table', p_schema);
  end if;

  v_rel := to_regclass(format('%I.%I', p_schema, p_table));
  if v_rel is null then
    raise exception using
      errcode = '42P01',
      message = format('table %I.%I does not exist', p_schema, p_table);
  end if;
  select format_type(a.atttypid, a.atttypmod) like 'timestamp%without time zone'
    into v_naive
    from pg_attribute a
   where a.attrelid = v_rel and a.attname = p_column and a.attnum > 0
     and not a.attisdropped;
  if v_naive is null then
    raise exception using
      errcode = '42703',
      message = format('column %I does not exist in %s', p_column, v_rel);
  end if;

  v_cut := case when v_naive then '($1 at time zone ''UTC'')' else '$1' end;
  v_after := case when v_naive then '($2 at time zone ''UTC'')' else '$2' end;
  v_bnd := case when v_naive then '($4 at time zone ''UTC'')' else '$4' end;

  if p_dry_run then
    execute format(
      'select count(*), max(c) from ('
      ' select %1$I as c from %2$s'
      '  where %1$I < %3$s and ($2 is null or %1$I > %4$s)'
      '  order by %1$I limit $3) s',
      p_column, v_rel, v_cut, v_after)
      into v_count, v_last
      using p_cutoff, p_after, p_limit;
    -- Rows sharing the last timestamp may straddle two batches. Count the
    -- whole tie group now, so that the next batch starts strictly after it.
    if v_count = p_limit then
      execute format(
        'select count(*) from %2$s'
        ' where %1$I < %3$s and ($2 is null or %1$I > %4$s) and %1$I <= %5$s',
        p_column, v_rel, v_cut, v_after,
        case when v_naive then '($4 at time zone ''UTC'')' else '$4' end)
        into v_count
        using p_cutoff, p_after, p_limit, v_last;
    end if;
  else
    -- A purge lost in a crash is simply redone by the next run, so its commit
    -- need not wait for the WAL flush. Set for the rest of the transaction:
    -- a SET clause on the function would be undone when the function returns,
    -- before the commit it is meant for.
    perform set_config('synchronous_commit', 'off', true);

    -- The batch is a range of the index: from p_after up to (not including)
    -- the timestamp of the p_limit-th oldest expired row, found in the index
    -- alone. Deleting by a plain range visits each heap page once, in order,
    -- like the single DELETE it stands in for; the cutoff stays in the same
    -- statement, so a row updated to a newer timestamp meanwhile is kept.
    execute format(
      'select %1$I from %2$s'
      ' where %1$I < %3$s and ($2 is null or %1$I >= %4$s)'
      ' order by %1$I offset $3 - 1 limit 1',
      p_column, v_rel, v_cut, v_after)
      into v_bound
      using p_cutoff, p_after, p_limit;

    if v_bound is null then
      -- Fewer than p_limit expired rows are left: this batch takes them all,
      -- and the next call, starting at the cutoff, finds nothing.
      execute format(
        'delete from %2$s where %1$I < %3$s and ($2 is null or %1$I >= %4$s)',
        p_column, v_rel, v_cut, v_after)
        using p_cutoff, p_after;
      get diagnostics v_count = row_count;
      v_last := p_cutoff;
    else
      execute format(
        'delete from %2$s'
        ' where %1$I < %3$s and ($2 is null or %1$I >= %4$s) and %1$I < %5$s',
        p_column, v_rel, v_cut, v_after, v_bnd)
        using p_cutoff, p_after, p_limit, v_bound;
      get diagnostics v_count = row_count;
      if v_count = 0 then
        -- At least p_limit rows share the timestamp v_bound: take p_limit of
        -- them by row address, so that a huge tie group (a bulk insert whose
        -- rows got the same now()) still goes in short transactions.
        execute format(
          'delete from %2$s t where t.ctid = any (array('
          '   select ctid from %2$s where %1$I = %5$s limit $3))'
          ' and t.%1$I < %3$s',
          p_column, v_rel, v_cut, v_after, v_bnd)
          using p_cutoff, p_after, p_limit, v_bound;
        get diagnostics v_count = row_count;
      end if;
      -- The rows at v_bound itself are left to the next batch, which starts
      -- there (p_after is inclusive).
      v_last := v_bound;
    end if;
  end if;

  -- max() of a naive column is read as UTC: the function runs in UTC.
  return jsonb_build_object(
    'count', v_count,
    'last', v_last,
    'elapsed_ms', extract(epoch from clock_timestamp() - statement_timestamp()) * 1000
  );
end;
$$;

-- The planner's estimate of rows still older than the cutoff: cheap, for the
-- `remaining_estimate` of a run that stopped on its time budget.
create or replace function public.housekeeper_purge_estimate(
  p_schema text,
  p_table text,
  p_column text,
  p_cutoff timestamptz
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
declare
  v_rel regclass;
  v_plan jsonb;
begin
  v_rel := to_regclass(format('%I.%I', p_schema, p_table));
  if v_rel is null then
    raise exception using
      errcode = '42P01',
      message = format('table %I.%I does not exist', p_schema, p_table);
  end if;
  execute format(
    'explain (format json) select 1 from %s where %I < %L::timestamptz',
    v_rel, p_column, p_cutoff)
    into v_plan;
  return jsonb_build_object('estimate', (v_plan -> 0 -> 'Plan' ->> 'Plan Rows')::bigint);
end;
$$;

revoke all on function public.housekeeper_missing_functions(text[]) from public, anon, authenticated;
revoke all on function public.housekeeper_purge_prepare(text, text, text) from public, anon, authenticated;
revoke all on function public.housekeeper_purge_batch(text, text, text, timestamptz, timestamptz, integer, boolean) from public, anon, authenticated;
revoke all on function public.housekeeper_purge_estimate(text, text, text, timestamptz) from public, anon, authenticated;
grant execute on function public.housekeeper_missing_functions(text[]) to service_role;
grant execute on function public.housekeeper_purge_prepare(text, text, text) to service_role;
grant execute on function public.housekeeper_purge_batch(text, text, text, timestamptz, timestamptz, integer, boolean) to service_role;
grant execute on function public.housekeeper_purge_estimate(text, text, text, timestamptz) to service_role;

-- The default log table's purge index, where that table exists. A differently
-- named table needs its own: see the README.
do $$
begin
  if exists (
       select 1 from pg_attribute
        where attrelid = to_regclass('public.logs') and attname = 'timestamp'
          and not attisdropped)
  then
    create index if not exists logs_timestamp_idx on public.logs ("timestamp");
  end if;
end;
$$;
