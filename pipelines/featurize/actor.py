"""The encoder actor: one Ray Data actor holds the frozen vision encoder and turns work units
(a shard, or a slice of the SFT image list) into Parquet files.

Inside a call: a reader streams the unit's samples, a thread pool decodes and preprocesses them
(PIL releases the GIL for most of it), the encoder runs on batches of `batch_size` images, and a
writer appends each batch to the unit's output; the file appears under its final name only
when complete. The call returns one summary row per unit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any

import numpy as np
import torch

from pipelines.featurize.decode import DecodeError, decode_image
from pipelines.featurize.units import Sample, WorkUnit, read_unit
from pipelines.featurize.writer import UnitWriter
from vlora.config import VisionEncoderConfig


def _batched(samples: Iterator[Sample], size: int) -> Iterator[list[Sample]]:
    while batch := list(islice(samples, size)):
        yield batch


class EncoderActor:
    def __init__(
        self,
        encoder_json: dict,
        output_dir: str,
        batch_size: int,
        decode_threads: int,
        torch_threads: int | None,
    ) -> None:
        from vlora.utils.env import apply_offline_defaults
        from vlora.vision import build_vision_encoder

        apply_offline_defaults()
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.config = VisionEncoderConfig.model_validate(encoder_json)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder = build_vision_encoder(self.config).to(self.device)
        # bf16 on GPU halves the encoder's time; features are stored as fp16 either way
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.encoder.to(self.dtype)
        self.output_dir = output_dir
        self.batch_size = batch_size
        self.pool = ThreadPoolExecutor(max_workers=decode_threads)

    def _decode(self, sample: Sample) -> tuple[Sample, torch.Tensor | DecodeError]:
        try:
            return sample, decode_image(sample.image_bytes, self.encoder.preprocessor)
        except DecodeError as err:
            return sample, err

    @torch.inference_mode()
    def _encode(self, pixels: list[torch.Tensor]) -> np.ndarray:
        batch = torch.stack(pixels).to(self.device, self.dtype)  # [n, 3, S, S]
        return self.encoder(batch).float().cpu().numpy()  # [n, L, d_v]

    def process(self, unit: WorkUnit) -> dict[str, Any]:
        started = time.perf_counter()
        writer = UnitWriter(unit.output(self.output_dir), self.config)
        seen = 0
        try:
            for chunk in _batched(read_unit(unit), self.batch_size):
                seen += len(chunk)
                decoded = list(self.pool.map(self._decode, chunk))
                good = [(s, p) for s, p in decoded if isinstance(p, torch.Tensor)]
                for sample, error in decoded:
                    if isinstance(error, DecodeError):
                        writer.skip(sample.key, error.reason, str(error))
                if good:
                    features = self._encode([p for _, p in good])
                    writer.write(
                        [s.key for s, _ in good],
                        features,
                        [s.caption for s, _ in good],
                        [s.captions_json for s, _ in good],
                    )
            result = writer.close()
        except BaseException:
            writer.abort()
            raise
        return {
            "unit": f"{unit.kind}/{unit.name}",
            "kind": unit.kind,
            "images_in": seen,
            "rows": result["rows"],
            "skipped": json.dumps(result["skipped"]),
            "seconds": time.perf_counter() - started,
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = [self.process(WorkUnit.from_row({"unit": u})) for u in batch["unit"]]
        return {key: [r[key] for r in rows] for key in rows[0]}
