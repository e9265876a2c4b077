"""The `cluster` source: collect a run on a real Kubernetes cluster (deploy, load, capture, watch)."""

from mimir.extras import require_extra

# Before any of its modules imports the Kubernetes client or Locust: without them, a clear message, not an ImportError.
require_extra("cluster", "collecting a run on a cluster (mimir collect, or a workflow run with source: cluster)")
