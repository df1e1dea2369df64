"""Which Ray nodes did a stage's work: recorded where the work runs, summed up per node.

A task, actor or training worker calls `this_node()` (node id, address, the node's own labels)
and returns it with its result; the driver folds the records into a `Placement` (work items per
node) that goes into the stage summary. On a cluster this shows that the work spread (or did
not), and after a lost node, which node took over.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

RAY_LABEL_PREFIX = "ray.io/"  # Ray's own labels (node id, accelerator…): not the node's identity


class NodeRecord(BaseModel):
    """A Ray node, as a piece of work running on it sees it."""

    model_config = ConfigDict(extra="forbid")

    node_id: str = Field(description="Ray node id (hex).")
    address: str = Field(description="The node's IP address.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="The node's labels, Ray's own (ray.io/*) left out."
    )

    @property
    def name(self) -> str:
        """A short readable name: a `…/node` label when the node has one, else the id."""
        named = [v for k, v in sorted(self.labels.items()) if k.endswith("/node")]
        return named[0] if named else self.node_id[:12]


def this_node() -> NodeRecord:
    """The node this Ray task / actor / driver runs on (Ray must be initialised)."""
    import ray

    context = ray.get_runtime_context()
    labels = {
        str(k): str(v)
        for k, v in (context.get_node_labels() or {}).items()
        if not str(k).startswith(RAY_LABEL_PREFIX)
    }
    return NodeRecord(
        node_id=context.get_node_id(), address=ray.util.get_node_ip_address(), labels=labels
    )


class NodeShare(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: NodeRecord
    items: int = Field(description="Work items this node did (shards, units, batches, ranks).")


class Placement(BaseModel):
    """Work items per node, largest share first."""

    model_config = ConfigDict(extra="forbid")

    unit: str = Field(description="What one item is: 'shard', 'unit', 'batch', 'rank'.")
    nodes: list[NodeShare] = Field(default_factory=list)

    @classmethod
    def of(cls, unit: str, records: Iterable[NodeRecord]) -> Placement:
        shares: dict[str, NodeShare] = {}
        for record in records:
            share = shares.setdefault(record.node_id, NodeShare(node=record, items=0))
            share.items += 1
        ordered = sorted(shares.values(), key=lambda s: (-s.items, s.node.node_id))
        return cls(unit=unit, nodes=ordered)

    @property
    def node_ids(self) -> set[str]:
        return {share.node.node_id for share in self.nodes}

    def describe(self) -> str:
        """'worker-1: 3 units, worker-2: 2 units'."""
        return ", ".join(f"{s.node.name}: {s.items} {self.unit}s" for s in self.nodes)


class TrainingAttempt(BaseModel):
    """One start of the training worker group: from which step, and every rank's node (compact:
    each node once, then one index per rank, so that 64 ranks fit in one MLflow tag)."""

    model_config = ConfigDict(extra="forbid")

    from_step: int = Field(description="The step the group started (or resumed) at.")
    started_at: float = Field(description="Unix time the group started.")
    nodes: list[NodeRecord] = Field(description="The nodes of the group, each once.")
    rank_nodes: list[int] = Field(description="Rank r ran on nodes[rank_nodes[r]].")

    @classmethod
    def of(cls, from_step: int, started_at: float, ranks: list[NodeRecord]) -> TrainingAttempt:
        index = {node_id: i for i, node_id in enumerate(dict.fromkeys(r.node_id for r in ranks))}
        nodes = list({r.node_id: r for r in ranks}.values())
        return cls(
            from_step=from_step,
            started_at=started_at,
            nodes=nodes,
            rank_nodes=[index[r.node_id] for r in ranks],
        )

    @property
    def ranks(self) -> list[NodeRecord]:
        return [self.nodes[i] for i in self.rank_nodes]


class TrainingPlacement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attempts: list[TrainingAttempt] = Field(
        default_factory=list, description="Every start of the worker group, in order."
    )

    @property
    def node_ids(self) -> set[str]:
        return {n.node_id for a in self.attempts for n in a.nodes}

    def last(self) -> Placement:
        """Ranks per node in the attempt that finished."""
        return Placement.of("rank", self.attempts[-1].ranks if self.attempts else [])
