"""One Locust file per application; `mimir collect` runs `locustfiles/<app>.py` (dashes become underscores)."""
