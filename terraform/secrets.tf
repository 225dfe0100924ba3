# Secrets: the cron secret (given or generated) and the credentials the user
# supplies, each in Secret Manager and mounted as an environment variable.

# Always generated, used only when no cron_secret is given: a count on a
# sensitive input would be refused, and an unused value costs nothing.
resource "random_password" "cron_secret" {
  length = 48
  # Letters and digits only: the value travels in an HTTP header and a shell.
  special = false
}

locals {
  cron_secret = var.cron_secret != null ? var.cron_secret : random_password.cron_secret.result

  secret_values = {
    CRON_SECRET               = local.cron_secret
    CRON_SECRET_PREVIOUS      = var.cron_secret_previous
    DATABASE_URL              = var.database_url
    SUPABASE_URL              = var.supabase_url
    SUPABASE_SERVICE_ROLE_KEY = var.supabase_service_role_key
    R2_ACCESS_KEY_ID          = var.r2_access_key_id
    R2_SECRET_ACCESS_KEY      = var.r2_secret_access_key
  }
}

resource "google_secret_manager_secret" "setting" {
  for_each = local.configured_secrets

  secret_id = "${var.name_prefix}-${lower(replace(each.key, "_", "-"))}"

  labels = {
    app     = "housekeeper"
    setting = lower(each.key)
  }

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_version" "setting" {
  for_each = local.configured_secrets

  secret      = google_secret_manager_secret.setting[each.key].id
  secret_data = local.secret_values[each.key]
}

resource "google_secret_manager_secret_iam_member" "runtime" {
  for_each = local.secret_grants

  secret_id = google_secret_manager_secret.setting[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.runtime[each.value.function].email}"
}
