# Inputs. `null` always means "not set"; an empty string is never used for that.

variable "project_id" {
  description = "ID of the Google Cloud project that receives the functions, the scheduler jobs and the secrets."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "The project_id must be a Google Cloud project ID: 6 to 30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of the functions, the source bucket and, unless scheduler_region is set, the Cloud Scheduler jobs (for example europe-west1)."
  type        = string
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "The region must look like a Google Cloud region, for example europe-west1 or us-central1."
  }
}

variable "scheduler_region" {
  description = "Region of the Cloud Scheduler jobs when it must differ from region (Cloud Scheduler is not offered in every region); null uses region."
  type        = string
  default     = null

  validation {
    condition     = var.scheduler_region == null || can(regex("^[a-z]+-[a-z]+[0-9]+$", var.scheduler_region))
    error_message = "The scheduler_region must be null or look like a Google Cloud region, for example europe-west1."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (functions, scheduler jobs, secrets, service accounts, metrics); keep it short because service account IDs stop at 30 characters."
  type        = string
  default     = "housekeeper"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,10}[a-z0-9]$", var.name_prefix))
    error_message = "The name_prefix must be 3 to 12 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

# Per job: entry_point (a function in functions/main.py), schedule (five-field
# cron), time_zone (IANA), params (request parameters; null ones are left out),
# memory_mb, timeout_s (function timeout), attempt_deadline_s (null: the
# timeout, capped at 30 minutes), max_instances, retry_count, overdue_after_s
# (schedule period plus grace), secrets (null: every configured one) and
# environment (plain settings for this job only).
variable "jobs" {
  description = "The scheduled jobs, keyed by job id (such as cleanup-logs); each becomes a Cloud Function and a Cloud Scheduler job that POSTs its params as JSON. The README's Deploy section describes every field."
  type = map(object({
    entry_point = string
    schedule    = string
    time_zone   = optional(string, "Etc/UTC")
    params = optional(object({
      retention_days           = optional(number)
      dry_run                  = optional(bool)
      time_budget_s            = optional(number)
      media_type               = optional(string)
      batch_size               = optional(number)
      skip_if_succeeded_within = optional(string)
    }), {})
    memory_mb          = optional(number, 512)
    timeout_s          = optional(number, 540)
    attempt_deadline_s = optional(number)
    max_instances      = optional(number, 1)
    retry_count        = optional(number, 1)
    overdue_after_s    = optional(number, 93600)
    secrets            = optional(list(string))
    environment        = optional(map(string), {})
  }))

  default = {
    "cleanup-logs" = {
      entry_point = "cleanup_logs"
      schedule    = "0 3 * * *"
      params = {
        retention_days = 30
      }
      memory_mb = 512
      timeout_s = 540
      # Daily, so one day plus two hours of grace.
      overdue_after_s = 93600
      # This job never touches object storage, so it never sees the R2 keys.
      secrets = [
        "CRON_SECRET",
        "CRON_SECRET_PREVIOUS",
        "DATABASE_URL",
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
      ]
    }
    "migrate-cdn-to-r2" = {
      entry_point = "migrate_cdn_to_r2"
      schedule    = "15 */6 * * *"
      params = {
        media_type = "all"
        batch_size = 50
      }
      # Video transcoding runs ffmpeg in memory next to the downloads.
      memory_mb = 2048
      timeout_s = 900
      # Every six hours, so one period plus two hours of grace.
      overdue_after_s = 28800
    }
  }

  validation {
    condition     = length(var.jobs) > 0 && alltrue([for id in keys(var.jobs) : can(regex("^[a-z][a-z0-9-]{0,15}[a-z0-9]$", id)) && !contains(["health", "build"], id)])
    error_message = "Each job id must be 2 to 17 lowercase letters, digits or hyphens (it becomes part of a 30-character service account ID), and neither health nor build, which name the health function and the build account."
  }

  validation {
    condition     = alltrue([for job in values(var.jobs) : can(regex("^[a-z_][a-z0-9_]*$", job.entry_point))])
    error_message = "Each entry_point must be a Python function name defined in functions/main.py."
  }

  validation {
    condition = alltrue([
      for job in values(var.jobs) :
      can(regex("^\\S+ \\S+ \\S+ \\S+ \\S+$", job.schedule))
      && can(regex("^[0-9*/,-]+ [0-9*/,-]+ [0-9*/,?LW-]+ [0-9A-Za-z*/,-]+ [0-9A-Za-z*/,?L#-]+$", job.schedule))
    ])
    error_message = "Each schedule must be a five-field cron expression (minute hour day-of-month month day-of-week), for example \"0 3 * * *\"."
  }

  validation {
    condition = alltrue([
      for job in values(var.jobs) :
      job.time_zone == "UTC" || can(regex("^(Etc|Africa|America|Antarctica|Asia|Atlantic|Australia|Europe|Indian|Pacific)/[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)?$", job.time_zone))
    ])
    error_message = "Each time_zone must be an IANA time zone name such as Etc/UTC or Europe/Berlin."
  }

  validation {
    condition     = alltrue([for job in values(var.jobs) : contains([128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768], job.memory_mb)])
    error_message = "Each memory_mb must be one of 128, 256, 512, 1024, 2048, 4096, 8192, 16384 or 32768."
  }

  validation {
    condition     = alltrue([for job in values(var.jobs) : job.timeout_s == floor(job.timeout_s) && job.timeout_s >= 15 && job.timeout_s <= 3600])
    error_message = "Each timeout_s must be a whole number of seconds from 15 to 3600 (the 2nd gen HTTP function limit)."
  }

  validation {
    condition = alltrue([
      for job in values(var.jobs) :
      job.attempt_deadline_s == null ? true : (
        job.attempt_deadline_s == floor(job.attempt_deadline_s)
        && job.attempt_deadline_s >= 15
        && job.attempt_deadline_s <= 1800
        && job.attempt_deadline_s <= job.timeout_s
      )
    ])
    error_message = "Each attempt_deadline_s must be a whole number from 15 to 1800 seconds and at most the job's timeout_s: Cloud Scheduler waits at most 30 minutes, and waiting longer than the function may run only hides a timeout."
  }

  validation {
    condition     = alltrue([for job in values(var.jobs) : job.max_instances == floor(job.max_instances) && job.max_instances >= 1 && job.max_instances <= 100])
    error_message = "Each max_instances must be a whole number from 1 to 100."
  }

  validation {
    condition     = alltrue([for job in values(var.jobs) : job.retry_count == floor(job.retry_count) && job.retry_count >= 0 && job.retry_count <= 5])
    error_message = "Each retry_count must be a whole number from 0 to 5 (the Cloud Scheduler limit)."
  }

  validation {
    condition     = alltrue([for job in values(var.jobs) : job.overdue_after_s == floor(job.overdue_after_s) && job.overdue_after_s >= 600 && job.overdue_after_s <= 5184000])
    error_message = "Each overdue_after_s must be a whole number of seconds from 600 (10 minutes) to 5184000 (60 days)."
  }

  validation {
    condition = alltrue([
      for job in values(var.jobs) :
      (job.params.retention_days == null ? true : job.params.retention_days == floor(job.params.retention_days) && job.params.retention_days >= 1 && job.params.retention_days <= 3650)
      && (job.params.batch_size == null ? true : job.params.batch_size == floor(job.params.batch_size) && job.params.batch_size >= 1 && job.params.batch_size <= 500)
      && (job.params.media_type == null ? true : contains(["profile", "posts", "reels", "all"], job.params.media_type))
      && (job.params.time_budget_s == null ? true : job.params.time_budget_s > 0 && job.params.time_budget_s < coalesce(job.attempt_deadline_s, min(job.timeout_s, 1800)))
      && (job.params.skip_if_succeeded_within == null ? true : can(regex("^[0-9]+[smhd]$", job.params.skip_if_succeeded_within)))
    ])
    error_message = "Job params out of range: retention_days 1..3650, batch_size 1..500, media_type one of profile, posts, reels, all, time_budget_s below the attempt deadline, skip_if_succeeded_within a duration such as 6h or 90m."
  }

  validation {
    condition = alltrue([
      for job in values(var.jobs) :
      job.secrets == null ? true : (
        contains(job.secrets, "CRON_SECRET")
        && length(setsubtract(job.secrets, local.secret_settings)) == 0
      )
    ])
    error_message = "Each job's secrets must include CRON_SECRET and name only CRON_SECRET, CRON_SECRET_PREVIOUS, DATABASE_URL, SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY, R2_ACCESS_KEY_ID or R2_SECRET_ACCESS_KEY."
  }

  validation {
    condition = alltrue([
      for job in values(var.jobs) :
      try(tonumber(job.environment["TIME_BUDGET_S"]) < coalesce(job.attempt_deadline_s, min(job.timeout_s, 1800)), !contains(keys(job.environment), "TIME_BUDGET_S"))
      && try(tonumber(job.environment["RUN_LEASE_S"]) >= job.timeout_s, !contains(keys(job.environment), "RUN_LEASE_S"))
    ])
    error_message = "A job's TIME_BUDGET_S must be a number below its attempt deadline, and its RUN_LEASE_S a number at least its timeout_s."
  }

  validation {
    condition     = alltrue([for job in values(var.jobs) : length(setsubtract(keys(job.environment), local.plain_settings)) == 0])
    error_message = "A job's environment may set only plain settings documented in functions/housekeeper/config.py; secrets have their own variables and FUNCTION_TIMEOUT_S follows timeout_s."
  }
}

variable "environment" {
  description = "Plain (non-secret) settings given to every function, by name as documented in the README's settings table, for example { LOGS_TABLE = \"system_logs\" }."
  type        = map(string)
  default     = {}

  validation {
    condition     = length(setsubtract(keys(var.environment), local.plain_settings)) == 0
    error_message = "The environment may set only plain settings documented in functions/housekeeper/config.py; secrets have their own variables and FUNCTION_TIMEOUT_S follows each job's timeout_s."
  }

  validation {
    condition     = length(setintersection(keys(var.environment), local.per_job_settings)) == 0
    error_message = "TIME_BUDGET_S and RUN_LEASE_S depend on each function's timeout: set them in a job's environment, not here."
  }
}

variable "cron_secret" {
  description = "Bearer secret that Cloud Scheduler sends and the functions require; null lets Terraform generate a 48-character one. Stored in Secret Manager and in the Terraform state."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.cron_secret == null || can(regex("^[\\x21-\\x7e]{32,}$", var.cron_secret))
    error_message = "The cron_secret must be at least 32 printable ASCII characters without spaces, or null to generate one."
  }
}

variable "cron_secret_previous" {
  description = "The bearer secret being rotated out, still accepted while callers switch over; null when no rotation is under way."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.cron_secret_previous == null || can(regex("^[\\x21-\\x7e]{32,}$", var.cron_secret_previous))
    error_message = "The cron_secret_previous must be at least 32 printable ASCII characters without spaces, or null."
  }
}

variable "database_url" {
  description = "Direct Postgres connection string (Supabase direct or pooled URL); wins over the Supabase transport when both are set. Null when the Supabase transport is used."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.database_url == null || can(regex("^postgres(ql)?://", var.database_url))
    error_message = "The database_url must start with postgres:// or postgresql://, or be null."
  }

  validation {
    condition     = var.database_url != null || (var.supabase_url != null && var.supabase_service_role_key != null)
    error_message = "Set database_url, or both supabase_url and supabase_service_role_key: the jobs need a database."
  }
}

variable "supabase_url" {
  description = "Supabase project URL for the RPC transport, for example https://abcd.supabase.co; null when database_url is used."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.supabase_url == null || can(regex("^https://[^/]+", var.supabase_url))
    error_message = "The supabase_url must start with https://, or be null."
  }
}

variable "supabase_service_role_key" {
  description = "Supabase service-role key used by the RPC transport; null when database_url is used."
  type        = string
  default     = null
  sensitive   = true
}

variable "r2_access_key_id" {
  description = "Cloudflare R2 access key ID for the media migration; null when no job uploads media."
  type        = string
  default     = null
  sensitive   = true
}

variable "r2_secret_access_key" {
  description = "Cloudflare R2 secret access key for the media migration; null when no job uploads media."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = (var.r2_secret_access_key == null) == (var.r2_access_key_id == null)
    error_message = "Set both r2_access_key_id and r2_secret_access_key, or neither."
  }
}

variable "ingress_settings" {
  description = "Who may reach the functions: ALLOW_ALL (default; Cloud Scheduler and the Render fallback call over public HTTPS and the bearer secret is the gate), ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB when you front them yourself."
  type        = string
  default     = "ALLOW_ALL"

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.ingress_settings)
    error_message = "The ingress_settings must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "enable_public_invoker" {
  description = "Whether anyone may invoke the functions without a Google identity (roles/run.invoker for allUsers); needed by Cloud Scheduler here because its Authorization header carries the bearer secret, not an OIDC token."
  type        = bool
  default     = true
}

variable "enable_health_function" {
  description = "Whether to deploy the health target as its own function (GET; ?deep=1 checks the database and each job's last success)."
  type        = bool
  default     = true
}

variable "enable_apis" {
  description = "Whether Terraform enables the Google Cloud APIs it needs; turn off where APIs are managed elsewhere."
  type        = bool
  default     = true
}

variable "alert_email" {
  description = "Email address that receives the failed-run and overdue-job alerts."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_email))
    error_message = "The alert_email must be an email address."
  }
}

variable "source_archive_retention_days" {
  description = "Days a replaced source archive stays in the bucket (as a noncurrent version) before it is deleted; it is the window for rolling back by hand."
  type        = number
  default     = 30

  validation {
    condition     = var.source_archive_retention_days == floor(var.source_archive_retention_days) && var.source_archive_retention_days >= 1 && var.source_archive_retention_days <= 3650
    error_message = "The source_archive_retention_days must be a whole number from 1 to 3650."
  }
}
