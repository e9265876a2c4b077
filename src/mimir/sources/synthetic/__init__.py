"""The synthetic source of runs: a seeded simulation of a microservice application under load, as a
capture on a Kubernetes node's `any` interface would show it.

The work goes through layers, each of which hands the next a table:
- sessions.py and simulation.py work on connections, not packets: user sessions (the load model: mimir.loadmodel)
  become pages, pages become trees of service calls, and the cluster's pods, autoscaling and background traffic
  (DNS, kubelet probes, replication, benign egress, optional exfiltration) add more connections;
- packets.py expands every connection, with numpy, into its TCP or UDP packets in one or two views (before and
  after the service VIP's DNAT, or before and after egress SNAT), sorted by time in batches;
- bundle.py writes them as Linux cooked v2 records (mimir.capture.pcapwrite), rotated into several files, with
  entities.jsonl and run.json.
What a run is asked for is a mimir.spec.RunSpec, the same object the command line and the workflow build.
Keeping packets out of the simulation keeps it small, and a long run's packets never all in memory.
"""

from __future__ import annotations

from mimir.sources.synthetic.bundle import SynthResult, synthesize

__all__ = ["SynthResult", "synthesize"]
