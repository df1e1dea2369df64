"""The lmms-eval adapter against the real lmms-eval package (slow tier).

``lmms-eval --model vlora`` runs as a subprocess on a local task (``--include_path``: a task YAML
over a parquet file with an HF ``Image`` column, the layout of lmms-eval's hub datasets), so the
package's entry point, model registry, task loader, request construction, stop strings and metric
are lmms-eval's own. The model is a deterministic generate function (``factory=module:function``)
that names the colour of the image it is given, with some answers wrong on purpose; its outputs,
read back from lmms-eval's ``--log_samples`` file, are then scored by ``vlora score`` on the same
questions as a VLMEvalKit-format TSV. Exact match is defined alike in both (case and punctuation
ignored, one-word answers), so the two accuracies must be equal.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from pipelines.core.process_groups import free_port
from vlora.eval.adapters.lmms_eval import VLoRALmms, register_with_lmms_eval
from vlora.eval.prompts import VICUNA_V1_SYSTEM

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[3]
TASK = "vlora_colours"
QUESTION = "What colour is the image?"
POST_PROMPT = "\nAnswer the question using a single word or phrase."
IMAGE_SIZE = (8, 6)
# (answer, the image's colour, what the fake model says): the third answer is wrong, the fourth
# is right only once cut at the task's stop string, the fifth is not a one-word answer.
ROWS = [
    ("red", (255, 0, 0), "Red."),
    ("blue", (0, 0, 255), "blue"),
    ("green", (0, 128, 0), "blue"),
    ("yellow", (255, 255, 0), "Yellow\n\nThe whole image is yellow."),
    ("white", (255, 255, 255), "It is white"),
]
EXPECTED_PERCENT = 60.0  # rows 0, 1 and 3

FAKE_MODEL = '''
"""Deterministic stand-in for a VLoRA checkpoint: answers from the image's colour."""
import json

ANSWERS = {answers!r}


def make(log):
    def generate(prompt, image):
        with open(log, "a", encoding="utf-8") as handle:
            size = None if image is None else list(image.size)
            handle.write(json.dumps({{"prompt": prompt, "size": size}}) + "\\n")
        return ANSWERS[repr(image.getpixel((0, 0)))]

    return generate
'''

TASK_YAML = """\
task: {task}
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {parquet}
test_split: test
output_type: generate_until
doc_to_visual: image
doc_to_text: "{{{{question}}}}{post_prompt}"
doc_to_target: answer
generation_kwargs:
  until: ["\\n\\n"]
  max_new_tokens: 16
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
metadata:
  version: 0.0
"""


def _require_lmms_eval() -> None:
    # scripts/setup.sh installs it (requirements/no-deps.txt); a skip would hide a broken install
    assert importlib.util.find_spec("lmms_eval") is not None, "lmms-eval is not installed"


def _lmms_eval_command() -> list[str]:
    """The package's console script next to this interpreter (``python -m lmms_eval`` if none)."""
    script = Path(sys.executable).parent / "lmms-eval"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lmms_eval"]


def _write_parquet(path: Path) -> None:
    import datasets  # an lmms-eval dependency (requirements/base.txt)

    features = datasets.Features(
        {
            "index": datasets.Value("int64"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
        }
    )
    table = {
        "index": list(range(len(ROWS))),
        "image": [Image.new("RGB", IMAGE_SIZE, colour) for _, colour, _ in ROWS],
        "question": [QUESTION] * len(ROWS),
        "answer": [answer for answer, _, _ in ROWS],
    }
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(path))


def _run_lmms_eval(tmp_path: Path) -> tuple[dict, list[dict], list[dict], str]:
    """Run the CLI; return its results JSON, logged samples, the model's calls and its output."""
    models_dir, tasks_dir, out_dir = tmp_path / "models", tmp_path / "tasks", tmp_path / "out"
    models_dir.mkdir()
    tasks_dir.mkdir()
    answers = {repr(colour): said for _, colour, said in ROWS}
    (models_dir / "fake_vlora_model.py").write_text(FAKE_MODEL.format(answers=answers))
    parquet = tmp_path / "colours.parquet"
    _write_parquet(parquet)
    (tasks_dir / f"{TASK}.yaml").write_text(
        TASK_YAML.format(task=TASK, parquet=parquet, post_prompt=POST_PROMPT.replace("\n", "\\n"))
    )
    calls_log = tmp_path / "calls.jsonl"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"),
        "WANDB_MODE": "disabled",
        # lmms-eval sets up torch.distributed on MASTER_PORT (29517 unless set): a free
        # loopback port, so another process holding 29517 cannot fail the run
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(models_dir), os.environ.get("PYTHONPATH", "")])
        ),
    }
    completed = subprocess.run(
        [
            *_lmms_eval_command(),
            "--model", "vlora",
            "--model_args", f"factory=fake_vlora_model:make,log={calls_log}",
            "--tasks", TASK,
            "--include_path", str(tasks_dir),
            "--batch_size", "1",
            "--output_path", str(out_dir),
            "--log_samples",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
        check=False,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    # lmms-eval reports a failed evaluation in its log and may still exit 0: check the files too
    results_files = sorted(out_dir.rglob("*_results.json"))
    samples_files = sorted(out_dir.rglob(f"*_samples_{TASK}.jsonl"))
    assert completed.returncode == 0 and results_files and samples_files, output[-6000:]
    results = json.loads(results_files[-1].read_text())
    samples = [json.loads(line) for line in samples_files[-1].read_text().splitlines() if line]
    calls = [json.loads(line) for line in calls_log.read_text().splitlines() if line]
    return results, samples, calls, output


def _prediction(sample: dict) -> str:
    response = sample["filtered_resps"]
    while isinstance(response, list):  # one response per request; older versions nest it
        response = response[0]
    return str(response)


def test_entry_point_and_register_resolve_to_the_adapter() -> None:
    _require_lmms_eval()
    from lmms_eval import models

    assert models.get_model("vlora") is VLoRALmms  # through pyproject's entry point
    register_with_lmms_eval("vlora_registered_in_test")
    assert models.get_model("vlora_registered_in_test") is VLoRALmms


def test_lmms_eval_cli_accuracy_equals_vlora_score(
    tmp_path: Path, write_tsv, make_png_b64: Callable[..., str]
) -> None:
    _require_lmms_eval()
    results, samples, calls, output = _run_lmms_eval(tmp_path)
    assert "Failed to load model entry-point manifests" not in output

    # the adapter saw lmms-eval's requests: one image, the task prompt in the vicuna_v1 template
    assert len(calls) == len(ROWS)
    expected_prompt = f"{VICUNA_V1_SYSTEM} USER: <image>\n{QUESTION}{POST_PROMPT} ASSISTANT:"
    assert {call["prompt"] for call in calls} == {expected_prompt}
    assert all(call["size"] == list(IMAGE_SIZE) for call in calls)

    # lmms-eval's own numbers: its samples log, and the aggregate
    by_doc = {sample["doc_id"]: sample for sample in samples}
    assert sorted(by_doc) == list(range(len(ROWS)))
    # the fourth answer is cut at the task's stop string "\n\n"
    said = ["Red.", "blue", "blue", "Yellow", "It is white"]
    assert [_prediction(by_doc[i]) for i in range(len(ROWS))] == said
    assert [by_doc[i]["target"] for i in range(len(ROWS))] == [answer for answer, _, _ in ROWS]
    lmms_accuracy = results["results"][TASK]["exact_match,none"]
    assert 0 < lmms_accuracy < 1

    # the same predictions through the project's scorer, on the same questions as a TSV
    data = write_tsv(
        "EasyVQA_TEST.tsv",
        ["index", "image", "question", "answer"],
        [[i, make_png_b64(colour), QUESTION, answer] for i, (answer, colour, _) in enumerate(ROWS)],
    )
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(
        "".join(
            json.dumps({"index": doc_id, "prediction": _prediction(sample)}) + "\n"
            for doc_id, sample in sorted(by_doc.items())
        )
    )
    score = subprocess.run(
        [
            sys.executable, "-m", "vlora.cli", "score", "--benchmark", "EasyVQA_TEST",
            "--data", str(data), "--predictions", str(predictions),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert score.returncode == 0, score.stderr
    ours = json.loads(score.stdout)
    assert ours["n_questions"] == len(ROWS)
    assert ours["Overall"] == pytest.approx(100 * lmms_accuracy)
    assert ours["Overall"] == pytest.approx(EXPECTED_PERCENT)
