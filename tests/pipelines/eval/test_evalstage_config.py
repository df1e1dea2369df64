"""Eval stage config: bad keys, paths, files and checkpoints fail before any model is loaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.config import load_pipeline_config
from pipelines.config.eval import EvalConfig
from pipelines.eval import stage as eval_stage
from vlora.eval.errors import BenchmarkDataError

FORMATS = Path(__file__).resolve().parents[2] / "vlora" / "eval" / "data" / "benchmark-formats"
MME = str(FORMATS / "MME_synthetic.tsv")


def make_config(tmp_path: Path, **eval_fields):
    return load_pipeline_config(
        {
            "name": "t",
            "preset": "tiny-llama",
            "workdir": str(tmp_path / "runs"),
            "eval": eval_fields,
        }
    )


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the stage gets as far as Ray or generation."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the stage started Ray or loaded a model despite bad input")

    monkeypatch.setattr("pipelines.eval.runner.ensure_ray", forbidden)
    monkeypatch.setattr("pipelines.eval.runner.generate_all", forbidden)
    monkeypatch.setattr("vlora.eval.generate_fn.load_model_for_eval", forbidden)


def fake_checkpoint(tmp_path: Path) -> str:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "vlora_config.json").write_text('{"kind": "vlora", "model": {"template": "x"}}')
    return str(folder)


def test_unknown_benchmark_key_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"eval\.benchmarks\.0\.key.*unknown benchmark 'MMBnch'"):
        make_config(tmp_path, benchmarks=[{"key": "MMBnch", "data": MME}])


def test_data_is_required_except_for_local_benchmarks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"eval\.benchmarks\.1.*data: required for MME"):
        make_config(tmp_path, benchmarks=[{"key": "EasyVQA_TEST"}, {"key": "MME"}])
    with pytest.raises(ValueError, match="images: only for a local"):
        make_config(tmp_path, benchmarks=[{"key": "MME", "data": MME, "images": 3}])
    with pytest.raises(ValueError, match="repeated"):
        make_config(tmp_path, benchmarks=[{"key": "MME", "data": MME}, {"key": "MME", "data": MME}])
    assert [b.key for b in EvalConfig().benchmarks] == ["EasyVQA_TEST", "EasyVQA_YORN"]


def test_missing_data_path_fails_before_any_model(tmp_path: Path, no_model) -> None:
    config = make_config(
        tmp_path,
        checkpoint=fake_checkpoint(tmp_path),
        benchmarks=[{"key": "MME", "data": MME}, {"key": "CCBench", "data": str(tmp_path / "no")}],
    )
    with pytest.raises(ValueError, match=r"eval\.benchmarks\[1\]\.data: '.*no' does not exist"):
        eval_stage.run(config)
    assert not (tmp_path / "runs").exists()  # failed before the stage folder was made


def test_malformed_tsv_fails_naming_field_and_row(tmp_path: Path, no_model) -> None:
    broken = tmp_path / "MME.tsv"
    lines = FORMATS.joinpath("MME_synthetic.tsv").read_text().splitlines()
    lines[2] = lines[2].replace("\t0\t", "\t7\t")  # row 1 now refers to a row that does not exist
    broken.write_text("\n".join(lines) + "\n")
    config = make_config(
        tmp_path,
        checkpoint=fake_checkpoint(tmp_path),
        benchmarks=[{"key": "EasyVQA_TEST", "images": 2}, {"key": "MME", "data": str(broken)}],
    )
    with pytest.raises(BenchmarkDataError, match=r"eval\.benchmarks\[1\]\.data \(MME\).*index=1"):
        eval_stage.run(config)


def test_checkpoint_must_be_a_checkpoint(tmp_path: Path, no_model) -> None:
    config = make_config(
        tmp_path, checkpoint=str(tmp_path), benchmarks=[{"key": "MME", "data": MME}]
    )
    with pytest.raises(ValueError, match=r"eval\.checkpoint: .* is not a VLoRA checkpoint"):
        eval_stage.run(config)


def test_key_ignores_workers_but_not_results(tmp_path: Path) -> None:
    checkpoint = fake_checkpoint(tmp_path)
    base = {"checkpoint": checkpoint, "benchmarks": [{"key": "MME", "data": MME}]}
    key = eval_stage.key_config(make_config(tmp_path, **base))
    same = eval_stage.key_config(
        make_config(tmp_path, **base, num_actors=4, cpus_per_actor=0.5, torch_threads=3)
    )
    assert key == same
    assert key != eval_stage.key_config(make_config(tmp_path, **base, batch_size=4))
    assert key != eval_stage.key_config(make_config(tmp_path, **base, limit=2))
    # the data's content, not its location, is part of the key
    copy = tmp_path / "copy.tsv"
    shutil.copy(MME, copy)
    moved = {**base, "benchmarks": [{"key": "MME", "data": str(copy)}]}
    assert eval_stage.key_config(make_config(tmp_path, **moved)) == key
    copy.write_text(copy.read_text().replace("two dogs", "2 dogs"))
    assert eval_stage.key_config(make_config(tmp_path, **moved)) != key
    # re-saving the checkpoint changes the key
    (Path(checkpoint) / "bridge.safetensors").write_bytes(b"new weights")
    assert eval_stage.key_config(make_config(tmp_path, **base)) != key


def test_upstream_is_sft_unless_a_checkpoint_is_given(tmp_path: Path) -> None:
    assert eval_stage.UPSTREAM == ("sft",)
    assert eval_stage.upstream_stages(make_config(tmp_path)) == ("sft",)
    explicit = make_config(tmp_path, checkpoint=fake_checkpoint(tmp_path))
    assert eval_stage.upstream_stages(explicit) == ()
    assert eval_stage.key_config(make_config(tmp_path))["checkpoint"] == "upstream:sft"
