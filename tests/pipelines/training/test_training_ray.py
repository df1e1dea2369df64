"""Ray Train + DeepSpeed/DDP on CPU with 2 workers on 127.0.0.1, a tiny model and a toy set.

The toy pre-training set has four image "classes" (feature prototypes plus noise) with one
caption each: the generator can only lower the loss by turning the image into the right deltas.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipelines.config import load_pipeline_config
from pipelines.core.ray_cluster import RayConfig, ensure_ray
from pipelines.training.launcher import run_training
from vlora.auto import load_pretrained
from vlora.data.templates import PlainTemplate, Turn
from vlora.data.tokenize import encode_segments
from vlora.delta.injection import unwrapped_state_dict_key
from vlora.llm import build_llm
from vlora.presets import get_preset
from vlora.tokenizer import build_byte_tokenizer
from vlora.vision import build_vision_encoder

pytestmark = pytest.mark.slow

CAPTIONS = ["a red circle.", "a blue square.", "a green triangle.", "a yellow star."]


def toy_rows(n: int = 192, seed: int = 0) -> list[dict]:
    vision = get_preset("tiny-llama").model.vision
    tokenizer = build_byte_tokenizer()
    rng = np.random.default_rng(seed)
    shape = (vision.num_patches, vision.feature_dim)
    prototypes = rng.normal(size=(len(CAPTIONS), *shape)).astype(np.float32)
    rows = []
    for _ in range(n):
        label = int(rng.integers(len(CAPTIONS)))
        turns = [Turn("user", "<image>"), Turn("assistant", CAPTIONS[label])]
        encoded = encode_segments(tokenizer, PlainTemplate().render(turns))
        features = prototypes[label] + 0.1 * rng.normal(size=shape).astype(np.float32)
        rows.append(
            {
                "input_ids": np.asarray(encoded.input_ids, dtype=np.int32),
                "labels": np.asarray(encoded.labels, dtype=np.int32),
                "features": features.astype(np.float16).reshape(-1),
                "has_image": True,
                "length": len(encoded.input_ids),
            }
        )
    return rows


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ensure_ray(RayConfig(num_cpus=4))
    yield
    ray.shutdown()


def config_for(workdir: Path, *overrides: str):
    return load_pipeline_config(
        "smoke",
        [
            f"workdir={workdir}",
            "pretrain.max_steps=12",
            "pretrain.global_batch_size=8",
            "pretrain.num_workers=2",
            "pretrain.use_gpu=false",
            "pretrain.lr=3e-3",
            "pretrain.warmup_ratio=0.1",
            "pretrain.checkpoint_every_steps=4",
            "pretrain.report_every_steps=4",
            *overrides,
        ],
    )


def train(workdir: Path, *overrides: str) -> dict:
    import ray

    config = config_for(workdir, *overrides)
    dataset = ray.data.from_items(toy_rows())
    return run_training("pretrain", config, config.pretrain, dataset, str(workdir / "out"))


def bridge_weights(export_dir: str) -> dict[str, torch.Tensor]:
    return load_file(Path(export_dir) / "bridge.safetensors")


def assert_frozen_parts_unchanged(export_dir: str) -> None:
    """The exported LLM and vision weights are bit-identical to the untrained ones."""
    model = load_pretrained(export_dir)
    original = build_llm(get_preset("tiny-llama").model.llm).state_dict()
    exported = {unwrapped_state_dict_key(k): v for k, v in model.llm.state_dict().items()}
    assert original.keys() == exported.keys()
    for key, value in original.items():
        assert torch.equal(value, exported[key]), key
    vision = build_vision_encoder(get_preset("tiny-llama").model.vision).state_dict()
    for key, value in model.vision.state_dict().items():
        assert torch.equal(value, vision[key]), key


@pytest.fixture(scope="module")
def reference_run(ray_session, tmp_path_factory) -> dict:
    """An uninterrupted ZeRO-2 run that the resume tests must reproduce."""
    return train(tmp_path_factory.mktemp("reference"))


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_deepspeed_loss_falls_and_frozen_weights_stay(
    ray_session, reference_run, tmp_path, zero_stage
) -> None:
    result = reference_run if zero_stage == 2 else train(tmp_path, "pretrain.zero_stage=3")
    summary = result["summary"]
    assert summary["strategy"] == f"deepspeed-zero{zero_stage}"
    assert summary["loss_last"] < summary["loss_first"] - 0.2
    export = result["artifacts"]["model"]
    assert_frozen_parts_unchanged(export)
    assert Path(result["artifacts"]["loss_curve"]).stat().st_size > 1000
    if zero_stage == 2:  # the exported checkpoint loads and generates
        model = load_pretrained(export).eval()
        (answer,) = model.generate_text(["describe"], images=None, max_new_tokens=4)
        assert isinstance(answer, str)
        features = torch.from_numpy(toy_rows(1)[0]["features"].astype(np.float32)).view(1, 16, 32)
        ids = torch.tensor([[model.tokenizer.bos_token_id]])
        assert model.generate(ids, image_features=features, max_new_tokens=3).shape == (1, 3)


def test_ddp_strategy_trains(ray_session, tmp_path, capfd) -> None:
    result = train(tmp_path, "pretrain.strategy=ddp")
    # the local cluster has no dashboard: Ray Train's State API polling must not flood the log
    assert "State API may be temporarily unavailable" not in "".join(capfd.readouterr())
    assert result["summary"]["strategy"] == "ddp"
    assert result["summary"]["loss_last"] < result["summary"]["loss_first"] - 0.2
    assert_frozen_parts_unchanged(result["artifacts"]["model"])


def test_local_layout_one_worker_trains_and_recovers_from_a_kill(ray_session, tmp_path) -> None:
    """The local preset's layout: one worker with both CPUs and torch AdamW (`strategy: ddp` at
    world size 1 wraps nothing); killed at step 6, it restarts from the step-4 checkpoint and ends
    at the weights of an uninterrupted run."""
    layout = ("pretrain.strategy=ddp", "pretrain.num_workers=1", "pretrain.cpus_per_worker=2")
    reference = train(tmp_path / "reference", *layout)
    assert reference["summary"]["workers"] == 1 and reference["summary"]["strategy"] == "ddp"
    assert reference["summary"]["loss_last"] < reference["summary"]["loss_first"] - 0.2
    assert_frozen_parts_unchanged(reference["artifacts"]["model"])
    killed = train(tmp_path / "chaos", *layout, "pretrain.chaos_kill_at_step=6")
    marker = tmp_path / "chaos" / "out" / "chaos_done.txt"
    assert marker.read_text().startswith("killed rank 0 at step 6")
    assert reference["summary"]["resumed_from_steps"] == []
    assert killed["summary"]["resumed_from_steps"] == [4]  # the restart is on record
    ref = bridge_weights(reference["artifacts"]["model"])
    got = bridge_weights(killed["artifacts"]["model"])
    assert ref.keys() == got.keys()
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=1e-5, atol=1e-6, msg=key)


def test_killed_worker_restarts_from_checkpoint_and_matches(
    ray_session, reference_run, tmp_path
) -> None:
    reference = reference_run
    killed = train(tmp_path / "chaos", "pretrain.chaos_kill_at_step=6")
    marker = tmp_path / "chaos" / "out" / "chaos_done.txt"
    assert marker.read_text().startswith("killed rank 1 at step 6")
    assert killed["summary"]["steps"] == 12
    assert killed["summary"]["resumed_from_steps"] == [4]
    # resumed from the step-4 checkpoint: same data positions, same optimizer state
    ref, got = (
        bridge_weights(reference["artifacts"]["model"]),
        bridge_weights(killed["artifacts"]["model"]),
    )
    assert ref.keys() == got.keys()
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=1e-5, atol=1e-6, msg=key)


def test_bad_batch_config_and_unwritable_storage_fail_before_workers(tmp_path) -> None:
    config = config_for(tmp_path, "pretrain.global_batch_size=10", "pretrain.micro_batch_size=4")
    with pytest.raises(ValueError, match=r"pretrain\.global_batch_size: 10 is not divisible"):
        run_training("pretrain", config, config.pretrain, None, str(tmp_path / "out"))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    config = config_for(tmp_path, f"pretrain.storage_path={blocker}/ray")
    with pytest.raises(ValueError, match=r"pretrain\.storage_path: .* is not writable"):
        run_training("pretrain", config, config.pretrain, None, str(tmp_path / "out"))


RESUME_SCRIPT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("training_tests", {test_file!r})
tests = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tests)
from pipelines.core.ray_cluster import RayConfig, ensure_ray
ensure_ray(RayConfig(num_cpus=4))
result = tests.train(__import__("pathlib").Path({workdir!r}))
print("RESULT " + json.dumps(result["summary"]))
"""


def _committed_checkpoint(snapshot: Path) -> bool:
    try:
        state = json.loads(snapshot.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not yet written, or mid-write
        return False
    return state.get("latest_checkpoint_result") is not None


def test_stopped_job_resumes_from_latest_checkpoint(reference_run, tmp_path) -> None:
    """A job stopped after a checkpoint (driver terminated) resumes and reaches the same weights."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    workdir = tmp_path / "stopped"
    script = RESUME_SCRIPT.format(test_file=__file__, workdir=str(workdir))
    snapshot = workdir / "out" / "ray" / "pretrain" / "checkpoint_manager_snapshot.json"
    first = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 300
    # A checkpoint folder appears while it is still being written; only once Ray Train records
    # it in its snapshot is it what a restarted job resumes from.
    while time.monotonic() < deadline and not _committed_checkpoint(snapshot):
        assert first.poll() is None, "the first run ended before committing a checkpoint"
        time.sleep(0.5)
    assert _committed_checkpoint(snapshot), "no checkpoint committed within 300 s"
    descendants = psutil.Process(first.pid).children(recursive=True)
    os.kill(first.pid, signal.SIGTERM)  # a stopped job: the driver goes away mid-run
    first.wait(timeout=120)
    _gone, alive = psutil.wait_procs(descendants, timeout=60)
    assert not alive, f"processes left behind: {[p.pid for p in alive]}"
    assert not (workdir / "out" / "model").exists()  # it did not finish
    resumed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at step" in resumed.stdout + resumed.stderr
    (result_line,) = [x for x in resumed.stdout.splitlines() if x.startswith("RESULT ")]
    resumed_from = json.loads(result_line.removeprefix("RESULT "))["resumed_from_steps"]
    assert len(resumed_from) == 1 and resumed_from[0] >= 4  # the committed checkpoint's step
    export = workdir / "out" / "model"
    ref = bridge_weights(reference_run["artifacts"]["model"])
    got = bridge_weights(str(export))
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=1e-5, atol=1e-6, msg=key)
