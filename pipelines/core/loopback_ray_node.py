"""`ray start` for a node of a cluster that lives on this machine's loopback interface.

    python -m pipelines.core.loopback_ray_node --head --port 6390 --num-cpus 0 --block …
    python -m pipelines.core.loopback_ray_node --address 127.0.0.1:6390 --num-cpus 2 --block …

The arguments are `ray start`'s. Why a wrapper: Ray turns a loopback `--node-ip-address` (and a
loopback `--address`) into this machine's routable IP, so a stock `ray start` binds its servers
on the network even when told 127.0.0.1. Ray's switch for single-machine clusters (the one
`pipelines.core.ray_cluster` uses for a private cluster) keeps the loopback address but refuses to
start a worker node. Here only the loopback-to-routable rewrite is turned off, in this process,
before Ray's CLI runs: every server of the node (GCS, raylet, object manager, agents) then listens
on 127.0.0.1, and worker nodes can join. A node started this way is reachable from this machine
only, which is what a test cluster wants.
"""

from __future__ import annotations

import sys


def keep_loopback_addresses() -> None:
    """Make Ray keep 127.0.0.1 where it would substitute the routable IP (this process only)."""
    from ray._private import services

    services.resolve_ip_for_localhost = lambda host: host  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> None:
    keep_loopback_addresses()
    from ray.scripts.scripts import cli

    cli.main(args=["start", *(sys.argv[1:] if argv is None else argv)], prog_name="ray")


if __name__ == "__main__":
    main()
