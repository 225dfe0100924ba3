output "function_urls" {
  description = "HTTPS URL of each function, keyed by job id (and health when enabled)."
  value       = { for id, fn in google_cloudfunctions2_function.fn : id => fn.url }
}

output "scheduler_job_names" {
  description = "Cloud Scheduler job name of each job, keyed by job id; run one now with gcloud scheduler jobs run NAME --location=SCHEDULER_REGION."
  value       = { for id, job in google_cloud_scheduler_job.job : id => job.name }
}

output "scheduler_region" {
  description = "Region of the Cloud Scheduler jobs, for the --location flag of gcloud scheduler commands."
  value       = coalesce(var.scheduler_region, var.region)
}

output "cron_secret_id" {
  description = "Secret Manager resource ID of the cron secret (never its value); read the value with gcloud secrets versions access latest --secret=ID."
  value       = google_secret_manager_secret.setting["CRON_SECRET"].id
}

output "secret_ids" {
  description = "Secret Manager resource ID of every configured secret, keyed by setting name."
  value       = { for name, secret in google_secret_manager_secret.setting : name => secret.id }
}

output "runtime_service_accounts" {
  description = "Email of each function's runtime service account, keyed by job id."
  value       = { for id, account in google_service_account.runtime : id => account.email }
}

output "source_bucket" {
  description = "Name of the private bucket that holds the zipped function source."
  value       = google_storage_bucket.source.name
}
