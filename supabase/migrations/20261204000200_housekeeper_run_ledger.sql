-- housekeeper: the run ledger and the one-run-per-job lock.
--
-- The lock is the partial unique index: at most one `running` row per job,
-- whichever trigger or transport started it. A run whose lease has expired
-- (its process died) is marked `abandoned` by the next run, which takes over.

create schema if not exists housekeeper;

create table if not exists housekeeper.runs (
  run_id uuid primary key,
  job text not null,
  trigger text not null
    check (trigger in ('scheduler', 'render', 'manual', 'local')),
  scheduler_job text,
  schedule_time timestamptz,
  status text not null
    check (status in ('running', 'success', 'partial', 'dry_run', 'failed', 'abandoned')),
  started_at timestamptz not null default now(),
  lease_expires_at timestamptz not null,
  finished_at timestamptz,
  counts jsonb not null default '{}'::jsonb,
  error text,
  params jsonb not null default '{}'::jsonb
);

create unique index if not exists runs_one_running_per_job
  on housekeeper.runs (job) where status = 'running';
create index if not exists runs_job_started_idx
  on housekeeper.runs (job, started_at desc);
create index if not exists runs_job_schedule_time_idx
  on housekeeper.runs (job, schedule_time) where schedule_time is not null;

revoke all on table housekeeper.runs from public;

-- Times leave the database in UTC whatever the session's TimeZone: a
-- timestamptz becomes text with the session's offset otherwise.
create or replace function housekeeper.run_json(r housekeeper.runs)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
  select jsonb_build_object(
    'run_id', r.run_id,
    'job', r.job,
    'trigger', r.trigger,
    'scheduler_job', r.scheduler_job,
    'schedule_time', r.schedule_time,
    'status', r.status,
    'started_at', r.started_at,
    'finished_at', r.finished_at,
    'lease_expires_at', r.lease_expires_at,
    'counts', r.counts,
    'error', r.error
  );
$$;

-- Start a run, or say why not. Returns {"outcome": ..., "run": {...},
-- "abandoned": [run ids]} where outcome is `started`, `busy` (another run holds
-- the lock), `retry_done` (the same scheduler job already succeeded for this
-- schedule time) or `recent_success` (the job succeeded within
-- p_skip_within_s). Expired leases are reclaimed first.
create or replace function public.housekeeper_begin_run(
  p_job text,
  p_run_id uuid,
  p_trigger text,
  p_scheduler_job text,
  p_schedule_time timestamptz,
  p_lease_s integer,
  p_skip_within_s integer,
  p_params jsonb
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
declare
  v_found housekeeper.runs;
  v_new housekeeper.runs;
  v_abandoned jsonb;
  v_attempt integer := 0;
begin
  if p_lease_s is null or p_lease_s < 1 then
    raise exception using errcode = '22023', message = 'p_lease_s must be positive';
  end if;

  with stale as (
    update housekeeper.runs
       set status = 'abandoned',
           finished_at = now(),
           error = 'lease expired before the run finished; taken over'
     where job = p_job and status = 'running' and lease_expires_at < now()
    returning run_id
  )
  select coalesce(jsonb_agg(run_id), '[]'::jsonb) into v_abandoned from stale;

  if p_schedule_time is not null then
    select * into v_found from housekeeper.runs
     where job = p_job and schedule_time = p_schedule_time
       and scheduler_job is not distinct from p_scheduler_job
       and status = 'success'
     order by finished_at desc limit 1;
    if found then
      return jsonb_build_object('outcome', 'retry_done', 'run', housekeeper.run_json(v_found),
                                'abandoned', v_abandoned);
    end if;
  end if;

  if p_skip_within_s is not null then
    select * into v_found from housekeeper.runs
     where job = p_job and status = 'success'
       and finished_at >= now() - make_interval(secs => p_skip_within_s)
     order by finished_at desc limit 1;
    if found then
      return jsonb_build_object('outcome', 'recent_success', 'run', housekeeper.run_json(v_found),
                                'abandoned', v_abandoned);
    end if;
  end if;

  -- The unique index decides. A run that held it may end between the failed
  -- insert and the look-up of its row; then the lock is free: try again.
  loop
    v_attempt := v_attempt + 1;
    begin
      insert into housekeeper.runs (run_id, job, trigger, scheduler_job, schedule_time,
                                    status, lease_expires_at, params)
      values (p_run_id, p_job, p_trigger, p_scheduler_job, p_schedule_time, 'running',
              now() + make_interval(secs => p_lease_s), coalesce(p_params, '{}'::jsonb))
      returning * into v_new;
      return jsonb_build_object('outcome', 'started', 'run', housekeeper.run_json(v_new),
                                'abandoned', v_abandoned);
    exception when unique_violation then
      select * into v_found from housekeeper.runs
       where job = p_job and status = 'running';
      if found or v_attempt >= 5 then
        return jsonb_build_object('outcome', 'busy',
                                  'run', case when found then housekeeper.run_json(v_found) end,
                                  'abandoned', v_abandoned);
      end if;
    end;
  end loop;
end;
$$;

-- Record how a run ended. Only a run still `running` is updated: a run that
-- was taken over stays `abandoned`, and the caller is told.
create or replace function public.housekeeper_finish_run(
  p_run_id uuid,
  p_status text,
  p_counts jsonb,
  p_error text
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
declare
  v_run housekeeper.runs;
begin
  if p_status not in ('success', 'partial', 'dry_run', 'failed') then
    raise exception using errcode = '22023', message = format('invalid run status %L', p_status);
  end if;
  update housekeeper.runs
     set status = p_status, finished_at = now(),
         counts = coalesce(p_counts, '{}'::jsonb), error = p_error
   where run_id = p_run_id and status = 'running'
  returning * into v_run;
  if not found then
    select * into v_run from housekeeper.runs where run_id = p_run_id;
    return jsonb_build_object('updated', false, 'run', housekeeper.run_json(v_run));
  end if;
  return jsonb_build_object('updated', true, 'run', housekeeper.run_json(v_run));
end;
$$;

-- The most recent runs, newest first.
create or replace function public.housekeeper_list_runs(p_job text, p_limit integer)
returns jsonb
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
  select coalesce(jsonb_agg(housekeeper.run_json(r) order by r.started_at desc), '[]'::jsonb)
  from (
    select * from housekeeper.runs
     where p_job is null or job = p_job
     order by started_at desc
     limit least(greatest(coalesce(p_limit, 20), 1), 1000)
  ) r;
$$;

-- Per job: the last run and the last success, for `health?deep=1`.
create or replace function public.housekeeper_run_summary()
returns jsonb
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
  select coalesce(jsonb_object_agg(j.job, jsonb_build_object(
    'last_status', (select r.status from housekeeper.runs r where r.job = j.job
                     order by r.started_at desc limit 1),
    'last_started_at', (select max(r.started_at) from housekeeper.runs r where r.job = j.job),
    'last_success_at', (select max(r.finished_at) from housekeeper.runs r
                         where r.job = j.job and r.status = 'success'),
    -- A partial run made progress within its budget: not overdue, as the
    -- Terraform alert also counts it.
    'last_progress_at', (select max(r.finished_at) from housekeeper.runs r
                          where r.job = j.job and r.status in ('success', 'partial'))
  )), '{}'::jsonb)
  from (select distinct job from housekeeper.runs) j;
$$;

revoke all on function housekeeper.run_json(housekeeper.runs) from public;
revoke all on function public.housekeeper_begin_run(text, uuid, text, text, timestamptz, integer, integer, jsonb) from public, anon, authenticated;
revoke all on function public.housekeeper_finish_run(uuid, text, jsonb, text) from public, anon, authenticated;
revoke all on function public.housekeeper_list_runs(text, integer) from public, anon, authenticated;
revoke all on function public.housekeeper_run_summary() from public, anon, authenticated;
grant execute on function public.housekeeper_begin_run(text, uuid, text, text, timestamptz, integer, integer, jsonb) to service_role;
grant execute on function public.housekeeper_finish_run(uuid, text, jsonb, text) to service_role;
grant execute on function public.housekeeper_list_runs(text, integer) to service_role;
grant execute on function public.housekeeper_run_summary() to service_role;
