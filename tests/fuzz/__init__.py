"""Fuzzing of the readers of untrusted files: the capture reader, the entity log reader, the legacy pickle reader
and the workflow's config (tests/fuzz/corpus holds their seeds; `make fuzz` runs tests/fuzz/run.py)."""
