"""The Ray Data generation actor: loads the checkpoint once, answers whole prompt batches.

Each input row is one *prompt batch* fixed by the driver (benchmark, start row, prompts, image ids,
answer budget), so which prompts share a batch never depends on how Ray splits blocks: with
greedy decoding a rerun gives the same answers. Images reach the actor once per benchmark through
the object store (``image_stores``: benchmark key → ObjectRef of ``{image id: encoded bytes}``),
not once per row.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections import OrderedDict
from typing import Any

import pyarrow as pa

logger = logging.getLogger(__name__)

# Image stores kept decoded-to-bytes in an actor; benchmarks run one after another.
_STORES_KEPT = 2


class GenerationActor:
    """Callable class for ``Dataset.map_batches`` (``batch_format="pyarrow"``)."""

    def __init__(
        self,
        checkpoint: str,
        image_stores: dict[str, Any],
        prompt_input: str,
        device: str,
        dtype: str,
        torch_threads: int | None,
        cpus_per_actor: float,
    ) -> None:
        import torch

        from pipelines.training.export import local_copy
        from vlora.eval.generate_fn import BatchGenerator, load_model_for_eval
        from vlora.utils.env import apply_offline_defaults

        apply_offline_defaults()
        if device == "cpu":
            torch.set_num_threads(torch_threads or max(1, math.ceil(cpus_per_actor)))
        started = time.perf_counter()
        model = load_model_for_eval(local_copy(checkpoint), device=device, dtype=dtype)
        self.generator = BatchGenerator(model, prompt_input=prompt_input)  # type: ignore[arg-type]
        self.load_seconds = time.perf_counter() - started
        self.image_stores = image_stores
        self._stores: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        logger.info("generation actor: %s loaded in %.1f s", checkpoint, self.load_seconds)

    def _store(self, benchmark: str) -> dict[str, bytes]:
        import ray

        if benchmark not in self._stores:
            self._stores[benchmark] = ray.get(self.image_stores[benchmark])
            while len(self._stores) > _STORES_KEPT:
                self._stores.popitem(last=False)
        return self._stores[benchmark]

    def _images(self, benchmark: str, image_ids: list[str]) -> list[Any]:
        from PIL import Image

        store = self._store(benchmark) if any(image_ids) else {}
        images = []
        for image_id in image_ids:
            if not image_id:
                images.append(None)
                continue
            with Image.open(io.BytesIO(store[image_id])) as image:
                images.append(image.convert("RGB"))
        return images

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pipelines.core.placement import this_node

        node = this_node().model_dump_json()  # where this batch ran (the summary's placement)
        out: dict[str, list[Any]] = {
            "batch_id": [],
            "benchmark": [],
            "start": [],
            "predictions": [],
            "seconds": [],
            "node": [],
        }
        for job in batch.to_pylist():
            started = time.perf_counter()
            images = self._images(job["benchmark"], list(job["image_ids"]))
            answers = self.generator.generate(
                list(job["prompts"]), images, max_new_tokens=int(job["max_new_tokens"])
            )
            out["batch_id"].append(job["batch_id"])
            out["benchmark"].append(job["benchmark"])
            out["start"].append(job["start"])
            out["predictions"].append(answers)
            out["seconds"].append(time.perf_counter() - started)
            out["node"].append(node)
        return pa.table(out)
