"""housekeeper: scheduled maintenance jobs for a Supabase-backed application."""

__version__ = "0.1.0"
SERVICE = "housekeeper"
