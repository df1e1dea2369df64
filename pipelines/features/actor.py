"""The encoder actor: one Ray Data actor holds the frozen vision encoder and turns work units
(a shard, or a slice of the SFT image list) into Parquet files.

Inside a call, three things overlap: the unit's samples are streamed (tar or files), a thread
pool decodes and preprocesses them `prefetch_batches` batches ahead (PIL releases the GIL for
most of it), and the encoder runs on batches of `batch_size` images whose rows are appended to
the unit's output, which appears under its final name only when complete. A unit that cannot
be read to the end (a corrupt tar) returns its error instead of a file; the other units go on.
"""

from __future__ import annotations

import json
import time
import traceback
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any

import numpy as np
import torch

from pipelines.core.verbosity import progress_bars_enabled
from pipelines.features.decode import DecodeError, decode_image
from pipelines.features.units import Sample, WorkUnit, read_unit
from pipelines.features.writer import UnitWriter
from vlora.config import VisionEncoderConfig

Decoded = tuple[Sample, "torch.Tensor | DecodeError"]
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _batched(samples: Iterator[Sample], size: int) -> Iterator[list[Sample]]:
    while batch := list(islice(samples, size)):
        yield batch


def _progress(label: str, total: int | None) -> Any:
    """A per-unit images bar rendered by the driver (Ray's tqdm) when the driver writes to a
    terminal; None outside Ray or into a log file."""
    if not progress_bars_enabled():
        return None
    try:
        import ray
        from ray.experimental import tqdm_ray

        if ray.is_initialized():
            return tqdm_ray.tqdm(desc=f"features {label}", total=total, unit="img")
    except Exception:  # progress is a nicety, never a failure
        return None
    return None


class EncoderActor:
    def __init__(
        self,
        encoder_json: dict,
        output_dir: str,
        batch_size: int,
        decode_threads: int,
        prefetch_batches: int,
        torch_threads: int,
        use_gpu: bool,
        compute_dtype: str,
        show_progress: bool = True,
    ) -> None:
        from PIL import ImageFile

        from vlora.utils.env import apply_offline_defaults
        from vlora.vision import build_vision_encoder

        apply_offline_defaults()
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncated files are errors, never padded
        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError(
                "features.gpus_per_actor > 0 but this actor sees no CUDA device "
                "(set gpus_per_actor: 0 to encode on CPUs)"
            )
        self.device = torch.device("cuda" if use_gpu else "cpu")
        if not use_gpu:
            torch.set_num_threads(torch_threads)
        self.config = VisionEncoderConfig.model_validate(encoder_json)
        self.compute_dtype = compute_dtype
        self.dtype = TORCH_DTYPES[compute_dtype]
        self.encoder = build_vision_encoder(self.config).to(self.device, self.dtype)
        self.output_dir = output_dir
        self.batch_size = batch_size
        self.prefetch_batches = prefetch_batches
        self.show_progress = show_progress
        self.pool = ThreadPoolExecutor(max_workers=decode_threads)

    def _decode(self, sample: Sample) -> Decoded:
        if sample.read_error is not None:
            return sample, DecodeError(*sample.read_error)
        try:
            return sample, decode_image(sample.image_bytes, self.encoder.preprocessor)
        except DecodeError as err:
            return sample, err

    def _decoded_batches(self, samples: Iterator[Sample]) -> Iterator[list[Decoded]]:
        """Batches in input order; the pool works up to `prefetch_batches` batches ahead."""
        ahead: deque[list[Future[Decoded]]] = deque()
        for chunk in _batched(samples, self.batch_size):
            ahead.append([self.pool.submit(self._decode, s) for s in chunk])
            if len(ahead) > self.prefetch_batches:
                yield [f.result() for f in ahead.popleft()]
        while ahead:
            yield [f.result() for f in ahead.popleft()]

    @torch.inference_mode()
    def encode(self, pixels: list[torch.Tensor]) -> np.ndarray:
        batch = torch.stack(pixels).to(self.device, self.dtype)  # [n, 3, S, S]
        return self.encoder(batch).float().cpu().numpy()  # [n, L, d_v]

    def process(self, unit: WorkUnit) -> dict[str, Any]:
        started = time.perf_counter()
        writer = UnitWriter(unit.output(self.output_dir), self.config, self.compute_dtype)
        total = len(unit.images) if unit.kind == "sft" else None
        bar = _progress(unit.label, total) if self.show_progress else None
        try:
            for decoded in self._decoded_batches(read_unit(unit)):
                good = [(s, p) for s, p in decoded if isinstance(p, torch.Tensor)]
                for sample, error in decoded:
                    if isinstance(error, DecodeError):
                        writer.skip(sample.key, error.reason, error.detail)
                if good:
                    writer.write(
                        [s.key for s, _ in good],
                        self.encode([p for _, p in good]),
                        [s.caption for s, _ in good],
                        [s.captions_json for s, _ in good],
                    )
                if bar is not None:
                    bar.update(len(decoded))
            result = writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - started
        return {
            "rows": result["rows"],
            "skipped": result["skipped"],
            "error": "",
            "seconds": seconds,
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from pipelines.core.placement import this_node

        node = this_node().model_dump_json()  # where this unit ran (the stage summary's placement)
        rows = []
        for text in batch["unit"]:
            unit = WorkUnit.from_json(str(text))
            try:
                outcome = self.process(unit)
            except Exception as err:  # reported per unit; the other units go on
                detail = "".join(traceback.format_exception_only(err)).strip()
                outcome = {"rows": 0, "skipped": [], "error": detail, "seconds": 0.0}
            rows.append(
                {
                    "unit": unit.label,
                    "rows": outcome["rows"],
                    "skipped": json.dumps(outcome["skipped"]),
                    "error": outcome["error"],
                    "seconds": outcome["seconds"],
                    "node": node,
                }
            )
        return {key: [r[key] for r in rows] for key in rows[0]}
