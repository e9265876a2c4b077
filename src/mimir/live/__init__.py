"""`mimir live`: a trained model scored on live traffic, interval by interval (docs/architecture.md#live)."""
