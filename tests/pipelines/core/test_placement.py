"""Placement records: work items per node, training attempts in a compact, tag-sized form."""

from __future__ import annotations

import json

from pipelines.core.placement import NodeRecord, Placement, TrainingAttempt, TrainingPlacement


def node(i: int, name: str | None = None) -> NodeRecord:
    labels = {"vlora/node": name} if name else {}
    return NodeRecord(node_id=f"{i:02d}" * 28, address="127.0.0.1", labels=labels)


def test_placement_counts_items_per_node_largest_first() -> None:
    a, b = node(1, "worker-1"), node(2)
    placement = Placement.of("unit", [b, a, b, b, a, b])
    assert [(s.node.node_id, s.items) for s in placement.nodes] == [(b.node_id, 4), (a.node_id, 2)]
    assert placement.node_ids == {a.node_id, b.node_id}
    assert placement.describe() == f"{b.node_id[:12]}: 4 units, worker-1: 2 units"
    assert Placement.model_validate(placement.model_dump()) == placement
    assert Placement.of("batch", []).nodes == []


def test_training_attempt_keeps_rank_order_and_fits_an_mlflow_tag() -> None:
    nodes = [node(i, f"gpu-{i}") for i in range(8)]
    ranks = [nodes[r // 8] for r in range(64)]  # 8 nodes × 8 ranks, the paper layout
    attempt = TrainingAttempt.of(from_step=40, started_at=1.5, ranks=ranks)
    assert attempt.ranks == ranks and len(attempt.nodes) == 8
    assert len(attempt.model_dump_json()) < 8000  # MLflow's tag value limit
    restored = TrainingAttempt.model_validate_json(attempt.model_dump_json())
    placement = TrainingPlacement(attempts=[TrainingAttempt.of(0, 1.0, ranks[:2]), restored])
    assert placement.node_ids == {n.node_id for n in nodes}
    assert [s.items for s in placement.last().nodes] == [8] * 8
    json.dumps(placement.model_dump())
