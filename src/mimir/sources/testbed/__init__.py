"""The testbed source: a real WordPress in Linux network namespaces on this machine, loaded, captured and torn
down by `mimir testbed run` (docs/architecture.md#testbed-source)."""
