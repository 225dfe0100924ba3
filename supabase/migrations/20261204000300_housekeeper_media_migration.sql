-- housekeeper: per-item state of migrate-cdn-to-r2.
--
-- An item is one URL: a scalar column of a row (position 0) or one element of
-- a text[] column (position = 0-based index). Its state is keyed by
-- (source, row_id, position) and remembers the hash of the URL it is about, so
-- a row whose URL changes starts afresh.
--
-- Items are claimed (claimed_by, claimed_until) inside one short transaction
-- under a per-source advisory lock, so two overlapping runs never work on the
-- same item; a claim whose run died lapses after its lease.
--
-- Like every housekeeper function these are SECURITY DEFINER with a fixed
-- search_path, executable by service_role only, and they take the source table
-- and columns as identifiers that are resolved with to_regclass and quoted
-- with format('%I'), never concatenated.

create schema if not exists housekeeper;

create table if not exists housekeeper.media_items (
  source text not null,
  row_id text not null,
  position integer not null check (position >= 0),
  url_hash text not null,
  status text not null default 'pending'
    check (status in ('pending', 'migrated', 'failed', 'expired', 'skipped')),
  attempts integer not null default 0,
  last_error text,
  next_attempt_at timestamptz,
  claimed_by uuid,
  claimed_until timestamptz,
  r2_key text,
  bytes_in bigint,
  bytes_out bigint,
  updated_at timestamptz not null default now(),
  primary key (source, row_id, position)
);

create index if not exists media_items_claimed_by_idx
  on housekeeper.media_items (claimed_by) where claimed_until is not null;

revoke all on table housekeeper.media_items from public;

-- The host of an http(s) URL, lower case, without userinfo, port or a
-- trailing dot; NULL for anything else.
create or replace function housekeeper.media_url_host(p_url text)
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select nullif(rtrim(lower(substring(
    p_url from '^[Hh][Tt][Tt][Pp][Ss]?://(?:[^/?#@]*@)?([^/?#:@\[\]]+)')), '.'), '');
$$;

-- Whether a URL is on one of the hosts, or on a subdomain of one.
create or replace function housekeeper.media_on_hosts(p_url text, p_hosts text[])
returns boolean
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce((
    select bool_or(v.host = h.host or right(v.host, length(h.host) + 1) = '.' || h.host)
      from (select housekeeper.media_url_host(p_url) as host) v,
           (select ltrim(lower(trim(x)), '.') as host from unnest(p_hosts) x) h
     where v.host is not null and h.host <> ''
  ), false);
$$;

create or replace function housekeeper.media_url_hash(p_url text)
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select encode(sha256(convert_to(p_url, 'UTF8')), 'hex');
$$;

-- Resolve and check a source: the table exists, the id column is a unique key,
-- the URL column is text (image, video) or a one-dimensional text[]
-- (image_array). Returns the relation and the id column's type.
create or replace function housekeeper.media_resolve(
  p_schema text,
  p_table text,
  p_id_column text,
  p_url_column text,
  p_kind text,
  out relation regclass,
  out id_type text
)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_id_attnum smallint;
  v_url_type text;
  -- The role that called the SECURITY DEFINER function: PostgREST's SET ROLE
  -- (service_role), or the session's own user on a direct connection.
  v_caller text := coalesce(nullif(current_setting('role', true), 'none'), session_user);
begin
  if p_kind is null or p_kind not in ('image', 'image_array', 'video') then
    raise exception using
      errcode = '22023',
      message = format('media kind %L is not image, image_array or video', p_kind);
  end if;

  -- These functions run as their owner: they may only touch what the caller
  -- could read and update itself, and never the catalogs or their own state.
  if p_schema like 'pg\_%' or p_schema in ('information_schema', 'housekeeper') then
    raise exception using
      errcode = '42501',
      message = format('schema %I is not a place for media sources', p_schema);
  end if;
  relation := to_regclass(format('%I.%I', p_schema, p_table));
  if relation is null then
    raise exception using
      errcode = '42P01',
      message = format('table %I.%I does not exist', p_schema, p_table);
  end if;
  -- Two calls: given a list, has_table_privilege answers whether ANY applies.
  if not (has_table_privilege(v_caller, relation, 'SELECT')
          and has_table_privilege(v_caller, relation, 'UPDATE')) then
    raise exception using
      errcode = '42501',
      message = format('role %s may not read and update %s', v_caller, relation);
  end if;

  select a.attnum, format_type(a.atttypid, a.atttypmod)
    into v_id_attnum, id_type
    from pg_attribute a
   where a.attrelid = relation and a.attname = p_id_column
     and a.attnum > 0 and not a.attisdropped;
  if v_id_attnum is null then
    raise exception using
      errcode = '42703',
      message = format('column %I does not exist in %s', p_id_column, relation);
  end if;
  if not exists (
    select 1 from pg_index i
     where i.indrelid = relation and i.indisunique and i.indnkeyatts = 1
       and i.indkey[0] = v_id_attnum and i.indpred is null
  ) then
    raise exception using
      errcode = '42804',
      message = format('column %I of %s is not a primary or unique key',
                       p_id_column, relation);
  end if;

  select format_type(a.atttypid, null)
    into v_url_type
    from pg_attribute a
   where a.attrelid = relation and a.attname = p_url_column
     and a.attnum > 0 and not a.attisdropped;
  if v_url_type is null then
    raise exception using
      errcode = '42703',
      message = format('column %I does not exist in %s', p_url_column, relation);
  end if;
  if p_kind = 'image_array' and v_url_type not in ('text[]', 'character varying[]') then
    raise exception using
      errcode = '42804',
      message = format('column %I of %s is %s; kind image_array needs text[]',
                       p_url_column, relation, v_url_type);
  end if;
  if p_kind <> 'image_array' and v_url_type not in ('text', 'character varying') then
    raise exception using
      errcode = '42804',
      message = format('column %I of %s is %s; kind %s needs text',
                       p_url_column, relation, v_url_type, p_kind);
  end if;
end;
$$;

-- The SQL of a source's items: row id as text, position, URL and the id as
-- stored (for ordering), restricted to URLs on the CDN hosts ($1) that are
-- not already under the R2 public prefix ($2).
create or replace function housekeeper.media_items_sql(
  p_relation regclass,
  p_id_column text,
  p_url_column text,
  p_kind text
)
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select case when p_kind = 'image_array' then format(
    'select t.%1$I::text as row_id, (e.ord - 1)::integer as position, e.url,'
    '       t.%1$I as sort_id'
    '  from %3$s t'
    '  cross join lateral unnest(t.%2$I) with ordinality as e(url, ord)'
    ' where array_ndims(t.%2$I) = 1 and e.url is not null'
    '   and housekeeper.media_on_hosts(e.url, $1)'
    '   and ($2 is null or left(e.url, length($2)) <> $2)',
    p_id_column, p_url_column, p_relation)
  else format(
    'select t.%1$I::text as row_id, 0 as position, t.%2$I::text as url,'
    '       t.%1$I as sort_id'
    '  from %3$s t'
    ' where t.%2$I is not null'
    '   and housekeeper.media_on_hosts(t.%2$I, $1)'
    '   and ($2 is null or left(t.%2$I, length($2)) <> $2)',
    p_id_column, p_url_column, p_relation)
  end;
$$;

-- Claim up to p_limit eligible items of one source for run p_run_id, ordered by
-- row id and position, for p_lease_s seconds. Eligible: no state yet, a URL
-- other than the one the state is about, or a state that is `pending` or
-- `failed` past its next_attempt_at; never an item another run holds a live
-- claim on, and never one this run already worked on. Returns
-- {"items": [{row_id, position, url, url_hash, attempts, status}], "claimed": n}.
create or replace function public.housekeeper_media_claim(
  p_source text,
  p_schema text,
  p_table text,
  p_id_column text,
  p_url_column text,
  p_kind text,
  p_hosts text[],
  p_exclude_prefix text,
  p_run_id uuid,
  p_limit integer,
  p_lease_s integer
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_resolved record;
  v_items jsonb;
begin
  if p_limit is null or p_limit < 1 or p_limit > 1000 then
    raise exception using errcode = '22023', message = 'p_limit must be between 1 and 1000';
  end if;
  if p_lease_s is null or p_lease_s < 1 then
    raise exception using errcode = '22023', message = 'p_lease_s must be positive';
  end if;
  if p_run_id is null or p_source is null then
    raise exception using errcode = '22004', message = 'p_run_id and p_source are required';
  end if;
  select * into v_resolved
    from housekeeper.media_resolve(p_schema, p_table, p_id_column, p_url_column, p_kind);

  -- Claims of one source are serialised: the second of two overlapping runs
  -- waits a few milliseconds and then sees the first one's claims.
  perform pg_advisory_xact_lock(hashtextextended('housekeeper_media:' || p_source, 0));

  execute format(
    'with candidates as ('
    '  select c.row_id, c.position, c.url, c.sort_id,'
    '         housekeeper.media_url_hash(c.url) as url_hash'
    '    from (%1$s) c'
    '    left join housekeeper.media_items s'
    '      on s.source = $3 and s.row_id = c.row_id and s.position = c.position'
    '   where s.source is null'
    '      or ((s.claimed_until is null or s.claimed_until <= now())'
    '          and (s.url_hash <> housekeeper.media_url_hash(c.url)'
    '               or (s.claimed_by is distinct from $4'
    '                   and (s.status = ''pending'''
    '                        or (s.status = ''failed'''
    '                            and coalesce(s.next_attempt_at, ''-infinity'') <= now())))))'
    '   order by c.sort_id, c.position'
    '   limit $5),'
    ' claimed as ('
    '  insert into housekeeper.media_items as s'
    '         (source, row_id, position, url_hash, status, attempts,'
    '          claimed_by, claimed_until, updated_at)'
    '  select $3, row_id, position, url_hash, ''pending'', 0,'
    '         $4, now() + make_interval(secs => $6), now()'
    '    from candidates'
    '  on conflict (source, row_id, position) do update'
    '     set claimed_by = excluded.claimed_by,'
    '         claimed_until = excluded.claimed_until,'
    '         updated_at = now(),'
    '         url_hash = excluded.url_hash,'
    '         status = case when s.url_hash = excluded.url_hash'
    '                       then s.status else ''pending'' end,'
    '         attempts = case when s.url_hash = excluded.url_hash'
    '                         then s.attempts else 0 end,'
    '         last_error = case when s.url_hash = excluded.url_hash'
    '                           then s.last_error end,'
    '         next_attempt_at = case when s.url_hash = excluded.url_hash'
    '                                then s.next_attempt_at end,'
    '         r2_key = case when s.url_hash = excluded.url_hash then s.r2_key end,'
    '         bytes_in = case when s.url_hash = excluded.url_hash then s.bytes_in end,'
    '         bytes_out = case when s.url_hash = excluded.url_hash then s.bytes_out end'
    -- Re-checked on the locked row: the claim never takes a live one.
    '   where (s.claimed_until is null or s.claimed_until <= now())'
    '     and (s.url_hash <> excluded.url_hash'
    '          or (s.claimed_by is distinct from excluded.claimed_by'
    '              and (s.status = ''pending'''
    '                   or (s.status = ''failed'''
    '                       and coalesce(s.next_attempt_at, ''-infinity'') <= now()))))'
    '  returning s.row_id, s.position, s.url_hash, s.attempts, s.status)'
    ' select coalesce(jsonb_agg(jsonb_build_object('
    '          ''row_id'', c.row_id, ''position'', c.position, ''url'', c.url,'
    '          ''url_hash'', c.url_hash, ''attempts'', k.attempts, ''status'', k.status)'
    '        order by c.sort_id, c.position), ''[]''::jsonb)'
    '   from claimed k'
    '   join candidates c on c.row_id = k.row_id and c.position = k.position',
    housekeeper.media_items_sql(v_resolved.relation, p_id_column, p_url_column, p_kind))
    into v_items
    using p_hosts, p_exclude_prefix, p_source, p_run_id, p_limit, p_lease_s;

  return jsonb_build_object('items', v_items, 'claimed', jsonb_array_length(v_items));
end;
$$;

-- What a run would find, without claiming anything (dry_run): items eligible
-- now, and those waiting for their backoff, expired, or claimed by a live run.
create or replace function public.housekeeper_media_count(
  p_source text,
  p_schema text,
  p_table text,
  p_id_column text,
  p_url_column text,
  p_kind text,
  p_hosts text[],
  p_exclude_prefix text
)
returns jsonb
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_resolved record;
  v_counts jsonb;
begin
  select * into v_resolved
    from housekeeper.media_resolve(p_schema, p_table, p_id_column, p_url_column, p_kind);
  execute format(
    'select jsonb_build_object('
    '  ''on_cdn'', count(*),'
    '  ''eligible'', count(*) filter (where st = ''eligible''),'
    '  ''backing_off'', count(*) filter (where st = ''backing_off''),'
    '  ''expired'', count(*) filter (where st = ''expired''),'
    '  ''in_progress'', count(*) filter (where st = ''in_progress''),'
    '  ''done'', count(*) filter (where st = ''done''))'
    '  from ('
    '  select case'
    '    when s.claimed_until > now() then ''in_progress'''
    '    when s.source is null or s.url_hash <> housekeeper.media_url_hash(c.url)'
    '      or s.status = ''pending'' then ''eligible'''
    '    when s.status = ''failed'' and s.next_attempt_at > now() then ''backing_off'''
    '    when s.status = ''failed'' then ''eligible'''
    '    when s.status = ''expired'' then ''expired'''
    '    else ''done'' end as st'
    '    from (%1$s) c'
    '    left join housekeeper.media_items s'
    '      on s.source = $3 and s.row_id = c.row_id and s.position = c.position) x',
    housekeeper.media_items_sql(v_resolved.relation, p_id_column, p_url_column, p_kind))
    into v_counts
    using p_hosts, p_exclude_prefix, p_source;
  return v_counts;
end;
$$;

-- Record how an item ended and release its claim. Only the run holding the
-- claim, for the URL it claimed, can record: a run whose lease was taken over
-- is told so. attempts goes up by one; a failure waits
-- p_retry_base_s * 2^(attempts - 1) seconds, at most p_retry_max_s.
create or replace function public.housekeeper_media_record(
  p_source text,
  p_row_id text,
  p_position integer,
  p_url_hash text,
  p_run_id uuid,
  p_status text,
  p_error text,
  p_r2_key text,
  p_bytes_in bigint,
  p_bytes_out bigint,
  p_retry_base_s integer,
  p_retry_max_s integer
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_item housekeeper.media_items;
begin
  if p_status is null or p_status not in ('migrated', 'failed', 'expired', 'skipped') then
    raise exception using
      errcode = '22023', message = format('invalid media item status %L', p_status);
  end if;
  if p_retry_base_s is null or p_retry_base_s < 1
     or p_retry_max_s is null or p_retry_max_s < p_retry_base_s then
    raise exception using
      errcode = '22023',
      message = 'p_retry_base_s must be positive and at most p_retry_max_s';
  end if;

  update housekeeper.media_items s
     set status = p_status,
         attempts = s.attempts + 1,
         last_error = left(p_error, 1000),
         next_attempt_at = case when p_status = 'failed' then
           now() + make_interval(secs => least(
             p_retry_max_s::double precision,
             p_retry_base_s * power(2::double precision, least(s.attempts, 40))))
         end,
         claimed_until = null,
         r2_key = p_r2_key,
         bytes_in = p_bytes_in,
         bytes_out = p_bytes_out,
         updated_at = now()
   where s.source = p_source and s.row_id = p_row_id and s.position = p_position
     and s.claimed_by = p_run_id and s.url_hash = p_url_hash
  returning * into v_item;
  if not found then
    return jsonb_build_object('updated', false);
  end if;
  return jsonb_build_object(
    'updated', true,
    'status', v_item.status,
    'attempts', v_item.attempts,
    'next_attempt_at', v_item.next_attempt_at);
end;
$$;

-- Compare-and-set: replace the URL of one item only if the row still holds the
-- URL that was migrated. A scalar column is compared whole; an array element
-- at its position. Returns {"applied": true|false}.
create or replace function public.housekeeper_media_swap(
  p_schema text,
  p_table text,
  p_id_column text,
  p_url_column text,
  p_kind text,
  p_row_id text,
  p_position integer,
  p_old_url text,
  p_new_url text
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_resolved record;
  v_count bigint;
begin
  if p_old_url is null or p_new_url is null or p_row_id is null then
    raise exception using
      errcode = '22004', message = 'p_row_id, p_old_url and p_new_url are required';
  end if;
  if p_position is null or p_position < 0 or (p_kind <> 'image_array' and p_position <> 0) then
    raise exception using
      errcode = '22023', message = format('invalid position %s for a %s source', p_position, p_kind);
  end if;
  select * into v_resolved
    from housekeeper.media_resolve(p_schema, p_table, p_id_column, p_url_column, p_kind);

  if p_kind = 'image_array' then
    execute format(
      'update %1$s t set %3$I[array_lower(t.%3$I, 1) + $2] = $4'
      ' where t.%2$I = $1::%4$s and array_ndims(t.%3$I) = 1'
      '   and t.%3$I[array_lower(t.%3$I, 1) + $2] = $3',
      v_resolved.relation, p_id_column, p_url_column, v_resolved.id_type)
      using p_row_id, p_position, p_old_url, p_new_url;
  else
    execute format(
      'update %1$s t set %3$I = $4'
      ' where t.%2$I = $1::%4$s and t.%3$I = $3',
      v_resolved.relation, p_id_column, p_url_column, v_resolved.id_type)
      using p_row_id, p_position, p_old_url, p_new_url;
  end if;
  get diagnostics v_count = row_count;
  return jsonb_build_object('applied', v_count > 0);
end;
$$;

-- Release every claim a run still holds (items it claimed but did not reach
-- before its time budget ran out or a dependency failed).
create or replace function public.housekeeper_media_release(p_run_id uuid)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_count bigint;
begin
  update housekeeper.media_items
     set claimed_until = null, updated_at = now()
   where claimed_by = p_run_id and claimed_until is not null;
  get diagnostics v_count = row_count;
  return jsonb_build_object('released', v_count);
end;
$$;

revoke all on function housekeeper.media_url_host(text) from public;
revoke all on function housekeeper.media_on_hosts(text, text[]) from public;
revoke all on function housekeeper.media_url_hash(text) from public;
revoke all on function housekeeper.media_resolve(text, text, text, text, text) from public;
revoke all on function housekeeper.media_items_sql(regclass, text, text, text) from public;
revoke all on function public.housekeeper_media_claim(text, text, text, text, text, text, text[], text, uuid, integer, integer) from public, anon, authenticated;
revoke all on function public.housekeeper_media_count(text, text, text, text, text, text, text[], text) from public, anon, authenticated;
revoke all on function public.housekeeper_media_record(text, text, integer, text, uuid, text, text, text, bigint, bigint, integer, integer) from public, anon, authenticated;
revoke all on function public.housekeeper_media_swap(text, text, text, text, text, text, integer, text, text) from public, anon, authenticated;
revoke all on function public.housekeeper_media_release(uuid) from public, anon, authenticated;
grant execute on function public.housekeeper_media_claim(text, text, text, text, text, text, text[], text, uuid, integer, integer) to service_role;
grant execute on function public.housekeeper_media_count(text, text, text, text, text, text, text[], text) to service_role;
grant execute on function public.housekeeper_media_record(text, text, integer, text, uuid, text, text, text, bigint, bigint, integer, integer) to service_role;
grant execute on function public.housekeeper_media_swap(text, text, text, text, text, text, integer, text, text) to service_role;
grant execute on function public.housekeeper_media_release(uuid) to service_role;
