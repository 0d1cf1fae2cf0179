"""The operator dashboard: its page and its admin-only API."""
