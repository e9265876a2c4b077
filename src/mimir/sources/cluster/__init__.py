"""The `cluster` source: collect a run on a real Kubernetes cluster (deploy, load, capture, watch)."""
