"""The synthetic source of runs: a seeded simulation of a microservice application under load, as a
capture on a Kubernetes node's `any` interface would show it.

The work goes through layers, each of which hands the next a table:
- sessions.py, routing.py, simulation.py and the parts beside them work on connections, not packets: user
  sessions (the load model: mimir.loadmodel) become pages, pages become trees of service calls routed over the
  connections applications make (routing.py), pods come and go (pods.py), and the cluster's own traffic is added:
  DNS (resolver.py), the platform (platform.py), databases and jobs (database.py), timers, benign egress and
  optional exfiltration;
- packets.py expands every connection, with numpy, into its TCP or UDP packets as the wire shows them, in each of
  its views (before and after a VIP's DNAT, after SNAT, the half-NAT view of NodePort responses), sorted by time in
  batches;
- bundle.py writes them as Linux cooked v2 records (mimir.capture.pcapwrite), rotated into several files, with
  entities.jsonl and run.json.
What a run is asked for is a mimir.spec.RunSpec, the same object the command line and the workflow build.
Keeping packets out of the simulation keeps it small, and a long run's packets never all in memory.
"""

from __future__ import annotations

from mimir.sources.synthetic.bundle import SynthResult, synthesize

__all__ = ["SynthResult", "synthesize"]
