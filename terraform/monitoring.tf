# Alerts, so that a silent failure cannot last: every failed run and every
# failed scheduler attempt, and every job that has not succeeded in time.

locals {
  # Log-based metric names become PromQL names, where hyphens are not allowed.
  metric_prefix = replace(var.name_prefix, "-", "_")

  job_services = join(" OR ", [for job in values(local.jobs) : "\"${job.function_name}\""])
}

resource "google_monitoring_notification_channel" "email" {
  display_name = "${var.name_prefix} alerts"
  type         = "email"

  labels = {
    email_address = var.alert_email
  }

  depends_on = [google_project_service.enabled]
}

# The handler logs one JSON summary line per run with jsonPayload.job and
# jsonPayload.status; a failed run has status "failed" and severity ERROR.
resource "google_logging_metric" "failed_runs" {
  name        = "${local.metric_prefix}_failed_runs"
  description = "Runs of a ${var.name_prefix} job that ended with status failed."
  filter      = <<-EOT
    resource.type="cloud_run_revision"
    resource.labels.service_name=(${local.job_services})
    jsonPayload.status="failed"
  EOT

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"

    labels {
      key         = "job_id"
      value_type  = "STRING"
      description = "Job id as the handler reports it, such as cleanup-logs."
    }
  }

  label_extractors = {
    job_id = "EXTRACT(jsonPayload.job)"
  }

  depends_on = [google_project_service.enabled]
}

# Work done: partial counts too, since the next run continues where it stopped.
resource "google_logging_metric" "succeeded_runs" {
  name        = "${local.metric_prefix}_succeeded_runs"
  description = "Runs of a ${var.name_prefix} job that ended with status success or partial."
  filter      = <<-EOT
    resource.type="cloud_run_revision"
    resource.labels.service_name=(${local.job_services})
    jsonPayload.status=("success" OR "partial")
  EOT

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"

    labels {
      key         = "job_id"
      value_type  = "STRING"
      description = "Job id as the handler reports it, such as cleanup-logs."
    }
  }

  label_extractors = {
    job_id = "EXTRACT(jsonPayload.job)"
  }

  depends_on = [google_project_service.enabled]
}

# Attempts the handler never logged: a wrong secret (401), a crash, a timeout.
resource "google_logging_metric" "failed_attempts" {
  name        = "${local.metric_prefix}_failed_scheduler_attempts"
  description = "Cloud Scheduler attempts of a ${var.name_prefix} job that got no 2xx answer."
  filter      = <<-EOT
    resource.type="cloud_scheduler_job"
    resource.labels.job_id=(${local.job_services})
    severity>=ERROR
  EOT

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }

  depends_on = [google_project_service.enabled]
}

resource "google_monitoring_alert_policy" "failures" {
  display_name          = "${var.name_prefix}: a scheduled job failed"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.email.id]

  conditions {
    display_name = "A run ended with status failed"

    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.failed_runs.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.job_id"]
      }

      trigger {
        count = 1
      }
    }
  }

  conditions {
    display_name = "A Cloud Scheduler attempt got no 2xx answer"

    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.failed_attempts.name}\" AND resource.type=\"cloud_scheduler_job\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.job_id"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A ${var.name_prefix} job failed. Read the run's JSON summary in Logs Explorer (jsonPayload.status=\"failed\"), or the Cloud Scheduler job's attempt log for a 401 (secret mismatch), 409 (another run held the lock) or a deadline. `python -m housekeeper runs` lists the ledger."
  }
}

# Absence over a window longer than a day needs PromQL: metric-absence
# conditions stop at 23.5 hours, less than a daily job's period plus grace.
resource "google_monitoring_alert_policy" "overdue" {
  for_each = local.jobs

  display_name          = "${var.name_prefix}: ${each.key} has not succeeded for ${each.value.overdue_after_s}s"
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.email.id]

  conditions {
    display_name = "No success or partial run of ${each.key}"

    condition_prometheus_query_language {
      query               = "absent_over_time(logging_googleapis_com:user_${google_logging_metric.succeeded_runs.name}{monitored_resource=\"cloud_run_revision\",job_id=\"${each.key}\"}[${each.value.overdue_after_s}s])"
      evaluation_interval = "300s"
      # The metric has no data until the first run; validating it would
      # refuse the policy on a fresh project.
      disable_metric_validation = true
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "${each.key} has not logged a success or partial run for ${each.value.overdue_after_s} seconds (its schedule period plus grace). It also fires after a fresh deploy until the first run succeeds. Check the Cloud Scheduler job ${each.value.function_name}, then `health?deep=1`, which reports each job's last success."
  }
}
