# The functions: one per job plus health, built from functions/ by Cloud Build.

resource "google_project_service" "enabled" {
  for_each = toset(var.enable_apis ? [
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ] : [])

  service = each.value
  # Other workloads in the project may rely on these APIs too.
  disable_on_destroy = false
}

# The archive's hash is in the object name, so any change under functions/
# uploads a new object and redeploys every function that uses it.
data "archive_file" "source" {
  type        = "zip"
  source_dir  = "${path.module}/../functions"
  output_path = "${path.module}/.build/functions.zip"
  excludes = [
    "**/__pycache__/**",
    "**/*.pyc",
    ".mypy_cache/**",
    ".pytest_cache/**",
  ]
}

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:The bucket holds only build inputs written by Terraform; Cloud Audit Logs already record who reads or writes it, so a second access-log bucket adds cost and nothing to inspect.
  name                        = "${var.project_id}-${var.name_prefix}-source"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  # A replaced archive becomes a noncurrent version: it stays for rollback by
  # hand, then the lifecycle rule deletes it. The live archive is never aged out.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.source_archive_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_storage_bucket_object" "source" {
  name   = "functions-${data.archive_file.source.output_sha256}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.source.output_path
}

# Cloud Build runs as this account instead of a broad default one.
resource "google_service_account" "build" {
  account_id   = "${var.name_prefix}-build"
  display_name = "${var.name_prefix} function builds"
  description  = "Builds the ${var.name_prefix} functions from their source archive."

  depends_on = [google_project_service.enabled]
}

resource "google_project_iam_member" "build" {
  for_each = toset([
    "roles/artifactregistry.writer",
    "roles/logging.logWriter",
  ])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.build.email}"
}

resource "google_storage_bucket_iam_member" "build_reads_source" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.build.email}"
}

# One runtime account per function: it holds no project role and can read
# only the secrets its own function mounts (see secrets.tf).
resource "google_service_account" "runtime" {
  for_each = local.functions

  account_id   = each.value.function_name
  display_name = "${each.value.function_name} runtime"
  description  = "Runs the ${each.key} function; reads only the secrets that function mounts."

  depends_on = [google_project_service.enabled]
}

resource "google_cloudfunctions2_function" "fn" {
  #checkov:skip=CKV_GCP_124:Public ingress by default is deliberate: Cloud Scheduler and the Render fallback call over the internet and the bearer secret is the gate; var.ingress_settings restricts it where the functions are fronted differently.
  for_each = local.functions

  name        = each.value.function_name
  location    = var.region
  description = "housekeeper ${each.key}: target ${each.value.entry_point} in functions/main.py."

  build_config {
    runtime         = "python312"
    entry_point     = each.value.entry_point
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory   = "${each.value.memory_mb}Mi"
    timeout_seconds    = each.value.timeout_s
    min_instance_count = 0
    max_instance_count = each.value.max_instances
    # One request per instance: a run uses the whole instance's memory and CPU.
    max_instance_request_concurrency = 1
    ingress_settings                 = var.ingress_settings
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime[each.key].email
    # GOOGLE_CLOUD_PROJECT is not a housekeeper setting: Cloud Functions does not
    # set it, and the structured log handler needs it to link lines to traces.
    environment_variables = merge(each.value.environment, {
      GOOGLE_CLOUD_PROJECT = var.project_id
    })

    dynamic "secret_environment_variables" {
      for_each = each.value.secrets

      content {
        key        = secret_environment_variables.value
        project_id = var.project_id
        secret     = google_secret_manager_secret.setting[secret_environment_variables.value].secret_id
        # A pinned version: a new secret value redeploys the function, so no
        # instance keeps serving with a value Terraform has replaced.
        version = google_secret_manager_secret_version.setting[secret_environment_variables.value].version
      }
    }
  }

  depends_on = [
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_reads_source,
    google_secret_manager_secret_iam_member.runtime,
  ]
}

# Cloud Scheduler's Authorization header carries the bearer secret, so it
# cannot also carry an OIDC token: the invoker role goes to allUsers and the
# handler's constant-time secret check is the gate.
resource "google_cloud_run_service_iam_member" "public_invoker" {
  #checkov:skip=CKV_GCP_102:Unauthenticated invocation is deliberate: the Authorization header carries the bearer secret, which every target checks in constant time; var.enable_public_invoker turns this grant off.
  for_each = { for id, fn in local.functions : id => fn if var.enable_public_invoker }

  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
