# Cloud Scheduler: one job per entry of var.jobs, POSTing JSON with the bearer secret.

resource "google_cloud_scheduler_job" "job" {
  for_each = local.jobs

  name        = each.value.function_name
  description = "Runs ${each.key} on schedule; the Render cron service of the same job is the fallback."
  region      = coalesce(var.scheduler_region, var.region)
  schedule    = each.value.schedule
  time_zone   = each.value.time_zone

  attempt_deadline = "${each.value.attempt_deadline_s}s"

  retry_config {
    retry_count          = each.value.retry_count
    min_backoff_duration = "60s"
    max_backoff_duration = "600s"
    max_doublings        = 3
  }

  http_target {
    http_method = local.scheduler_requests[each.key].http_method
    uri         = google_cloudfunctions2_function.fn[each.key].url
    body        = base64encode(local.scheduler_requests[each.key].body)

    headers = {
      "Content-Type"  = local.scheduler_requests[each.key].content_type
      "Authorization" = "Bearer ${local.cron_secret}"
    }
  }

  lifecycle {
    # The same rule as the jobs validation, checked against the deployed
    # function: waiting longer than the function may run only hides a timeout.
    precondition {
      condition = (
        each.value.attempt_deadline_s <= google_cloudfunctions2_function.fn[each.key].service_config[0].timeout_seconds
        && each.value.attempt_deadline_s <= local.scheduler_max_deadline_s
      )
      error_message = "The attempt deadline of ${each.key} exceeds its function's timeout or Cloud Scheduler's 30-minute limit."
    }
  }

  depends_on = [google_project_service.enabled]
}
