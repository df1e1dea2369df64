"""The engine's pieces on their own: text deltas, the conditioning cache, sampling, the KV cache,
and the asyncio driver."""

from __future__ import annotations

import asyncio

import pytest
import torch

from tests.vlora.serving.conftest import prompt_ids
from vlora.serving import (
    AsyncEngine,
    CacheKey,
    Conditioning,
    ConditioningCache,
    EngineConfig,
    EngineOverloadedError,
    GenerationEngine,
    GenerationRequest,
    ImageConditioner,
    RequestError,
    SamplingParams,
)
from vlora.serving.kv_cache import SlotKVCache
from vlora.serving.sampling import nucleus_probabilities
from vlora.serving.text_stream import TextStream
from vlora.tokenizer import build_byte_tokenizer


def ids(text: str) -> list[int]:
    return build_byte_tokenizer()(text, add_special_tokens=False).input_ids


def stream_all(text: str, stop=()) -> tuple[list[str], TextStream]:
    stream = TextStream(build_byte_tokenizer(), stop)
    tokens = ids(text)
    deltas = [stream.add(t, last=i == len(tokens) - 1) for i, t in enumerate(tokens)]
    return deltas, stream


def test_text_stream_holds_back_split_characters() -> None:
    deltas, _stream = stream_all("héllo €")  # é and € are 2 and 3 byte-level tokens
    assert "".join(deltas) == "héllo €"
    assert all("\ufffd" not in d for d in deltas)


def test_text_stream_cuts_at_a_stop_string_and_never_releases_its_start() -> None:
    deltas, stream = stream_all("the answer is yes. END more", stop=("END", "XYZ"))
    assert stream.stopped
    assert "".join(deltas) == "the answer is yes. "
    assert not any("E" in d for d in deltas)
    # a stop token ends it: what was held back comes out
    stream = TextStream(build_byte_tokenizer(), ("zz",))
    out = [stream.add(t) for t in ids("abcz")]
    assert "".join(out) + stream.finish() == "abcz"


def test_conditioning_cache_lru_by_bytes() -> None:
    def entry(n: int) -> Conditioning:
        return Conditioning("input_space", {"visual": torch.zeros(n, dtype=torch.uint8)})

    cache = ConditioningCache(max_bytes=100)
    keys = [CacheKey(str(i), "v1") for i in range(4)]
    cache.put(keys[0], entry(40))
    cache.put(keys[1], entry(40))
    assert cache.get(keys[0]) is not None  # 0 is now the most recent
    cache.put(keys[2], entry(40))  # evicts 1
    assert cache.get(keys[1]) is None
    assert cache.get(CacheKey("0", "v2")) is None  # another model version is another entry
    cache.put(keys[3], entry(500))  # larger than the whole cache: counted, not stored
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["evictions"]) == (1, 2, 1)
    assert stats["hit_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert stats["entries"] == 2 and stats["bytes"] == 80 and stats["not_cached_too_large"] == 1


def test_nucleus_keeps_the_smallest_set_reaching_top_p() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    probs = nucleus_probabilities(logits, temperature=1.0, top_p=0.8)
    assert torch.allclose(probs, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert torch.allclose(nucleus_probabilities(logits, 1.0, 1.0).sum(), torch.tensor(1.0))
    with pytest.raises(RequestError, match="top_p"):
        SamplingParams(max_tokens=1, top_p=0)
    with pytest.raises(RequestError, match="temperature"):
        SamplingParams(max_tokens=1, temperature=float("nan"))


def test_slot_kv_cache_rows_move_and_grow(tiny_vlora) -> None:
    config = tiny_vlora.llm.config
    cache = SlotKVCache(config, max_slots=3, dtype=torch.float32, device="cpu", capacity=8)
    rows = [
        [(torch.full((4, n, 16), float(slot)), -torch.full((4, n, 16), float(slot)))] * 4
        for slot, n in ((0, 3), (1, 12), (2, 5))
    ]
    for slot, layers in enumerate(rows):
        cache.insert(slot, layers)
    assert cache.capacity == 16 and cache.lengths == [3, 12, 5]
    cache.move(2, 0)
    assert cache.lengths[:2] == [5, 12]
    assert torch.equal(cache.keys[0][0, :, :5], torch.full((4, 5, 16), 2.0))
    positions, mask = cache.begin_decode(2)
    assert positions.flatten().tolist() == [5, 12]
    assert mask.shape == (2, 1, 1, 13) and mask[0, 0, 0].sum() == 6 and mask[1, 0, 0].all()
    keys, _ = cache.update(torch.ones(2, 4, 1, 16), torch.ones(2, 4, 1, 16), 0)
    cache.end_decode()
    assert keys.shape == (2, 4, 13, 16) and cache.lengths[:2] == [6, 13]
    assert torch.equal(cache.keys[0][0, :, 5], torch.ones(4, 16))


def _request(model, images, name: str, max_tokens: int) -> GenerationRequest:
    conditioning = ImageConditioner(model).encode([images[0]])[0]
    return GenerationRequest(
        name,
        prompt_ids(model, "what is it?", True),
        SamplingParams(max_tokens=max_tokens, ignore_eos=True),
        conditioning,
    )


def test_async_engine_serves_concurrent_callers(tiny_vlora, images) -> None:
    sync = GenerationEngine(tiny_vlora).generate([_request(tiny_vlora, images, "ref", 9)])[0]
    engine = AsyncEngine(GenerationEngine(tiny_vlora, EngineConfig(max_batch_size=4)))

    async def collect(name: str) -> tuple[str, list[int]]:
        text, tokens = "", []
        async for output in engine.generate(_request(tiny_vlora, images, name, 9)):
            text += output.text
            tokens += output.token_ids
        return text, tokens

    async def main():
        return await asyncio.gather(*(collect(f"r{i}") for i in range(4)))

    try:
        results = asyncio.run(main())
        assert all(r == (sync.text, sync.token_ids) for r in results)
        assert engine.stats()["finished"] == {"length": 4}
    finally:
        engine.shutdown()


def test_async_engine_cancel_refuse_and_survive_a_failed_step(tiny_vlora, images) -> None:
    engine = AsyncEngine(GenerationEngine(tiny_vlora, EngineConfig(max_waiting=0)))

    async def first_output(request):
        async for output in engine.generate(request):
            return output  # leaving early aborts the rest

    async def main():
        out = await first_output(_request(tiny_vlora, images, "a", 50))
        assert out.completion_tokens == 1
        with pytest.raises(RequestError, match="context"):
            await first_output(_request(tiny_vlora, images, "b", 10_000))
        # a step that raises fails its requests; the next request is served
        original = engine.engine._decode_step
        engine.engine._decode_step = lambda: 1 / 0
        with pytest.raises(RuntimeError, match="generation failed"):
            async for _ in engine.generate(_request(tiny_vlora, images, "c", 5)):
                pass
        engine.engine._decode_step = original
        text = ""
        async for output in engine.generate(_request(tiny_vlora, images, "d", 5)):
            text += output.text
        return text

    try:
        assert asyncio.run(main())
        assert engine.failed_steps == 1 and engine.alive
        assert engine.engine.num_running == 0
    finally:
        engine.shutdown()
    full = GenerationEngine(tiny_vlora, EngineConfig(max_batch_size=1, max_waiting=1))
    full.add_request(_request(tiny_vlora, images, "e", 5))  # takes the free row
    full.add_request(_request(tiny_vlora, images, "f", 5))  # waits
    with pytest.raises(EngineOverloadedError):
        full.add_request(_request(tiny_vlora, images, "g", 5))
