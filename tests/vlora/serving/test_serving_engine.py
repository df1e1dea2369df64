"""The serving engine against the plain path (`model.generate`), token for token.

Every fast path of the engine is here: batched prefill of several requests, iteration-level
joins and leaves, factorised per-row deltas with text-only rows at zero, the merged path for a
lone request (and its switch back when others arrive), the baseline's spliced visual tokens,
and the KV cache's row moves and growth. Greedy answers must be the same alone and in a batch.
"""

from __future__ import annotations

import pytest
import torch

from tests.vlora.serving.conftest import build, prompt_ids, reference_tokens
from vlora.serving import (
    CompletedRequest,
    EngineConfig,
    GenerationEngine,
    GenerationRequest,
    ImageConditioner,
    RequestError,
    SamplingParams,
)

QUESTIONS = ["what is it?", "which colour?", "hello there", "shape?", "is it red?", "count"]
# image used by each question (None: text-only)
IMAGE_OF = [0, 1, None, 3, 4, 5]


def requests_for(model, images, max_tokens, suffix="", indices=None, **sampling):
    conditioner = ImageConditioner(model)
    out = []
    for i in indices if indices is not None else range(len(QUESTIONS)):
        u = IMAGE_OF[i]
        budget = max_tokens[i] if isinstance(max_tokens, list) else max_tokens
        out.append(
            GenerationRequest(
                f"{i}{suffix}",
                prompt_ids(model, QUESTIONS[i], u is not None),
                SamplingParams(max_tokens=budget, ignore_eos=True, **sampling),
                conditioner.encode([images[u]])[0] if u is not None else None,
            )
        )
    return out


def plain(model, images, i, max_tokens, **kwargs):
    u = IMAGE_OF[i]
    image = images[u] if u is not None else None
    return reference_tokens(
        model, prompt_ids(model, QUESTIONS[i], u is not None), image, max_tokens, **kwargs
    )


@pytest.fixture(params=["tiny_vlora", "saved_vlora", "tiny_baseline"])
def model(request):
    return request.getfixturevalue(request.param)


def test_engine_batch_equals_plain_generate(model, images) -> None:
    engine = GenerationEngine(model, EngineConfig(max_batch_size=6))
    results = engine.generate(requests_for(model, images, 12))
    for i, result in enumerate(results):
        assert result.token_ids == plain(model, images, i, 12), QUESTIONS[i]
        assert result.finish_reason == "length" and result.completion_tokens == 12
    assert engine.stats.prefill_steps == 1  # all six prefilled together


def test_engine_answers_do_not_depend_on_the_batch(model, images) -> None:
    alone = []
    for i in range(len(QUESTIONS)):
        engine = GenerationEngine(model, EngineConfig(max_batch_size=1))
        alone.append(engine.generate(requests_for(model, images, 10, indices=[i]))[0].token_ids)
    engine = GenerationEngine(model, EngineConfig(max_batch_size=6))
    together = [r.token_ids for r in engine.generate(requests_for(model, images, 10))]
    assert together == alone


def test_engine_deltas_are_per_request(tiny_vlora, images) -> None:
    """The test above could pass if every row saw the same image: it must not."""
    answers = {tuple(plain(tiny_vlora, images, i, 10)) for i in (0, 1, 3, 4, 5)}
    assert len(answers) > 1
    zero = build("vlora")
    with torch.no_grad():
        for w_s in zero.generator.w_s.values():
            w_s.zero_()
    assert plain(zero, images, 0, 10) != plain(tiny_vlora, images, 0, 10)


def test_engine_iteration_level_join_and_leave(model, images) -> None:
    """Requests arrive while others decode and leave at different lengths; rows move."""
    budgets = [30, 4, 9, 17, 6, 12]
    pending = requests_for(model, images, budgets)
    engine = GenerationEngine(model, EngineConfig(max_batch_size=3, kv_initial_capacity=8))
    results = {r.request_id: CompletedRequest(r.request_id, "") for r in pending}
    engine.add_request(pending.pop(0))
    step = 0
    while engine.has_work() or pending:
        step += 1
        if pending and step in (3, 5, 6, 9, 14):
            engine.add_request(pending.pop(0))
        for output in engine.step():
            results[output.request_id].add(output)
        assert engine.num_running <= 3
    for i, budget in enumerate(budgets):
        assert results[str(i)].token_ids == plain(model, images, i, budget), QUESTIONS[i]
    assert engine.cache.capacity > 8  # grew while running
    assert engine.stats.prefill_steps >= 4


def test_engine_merges_a_lone_request(tiny_vlora, images) -> None:
    before = {k: v.clone() for k, v in tiny_vlora.llm.state_dict().items()}
    engine = GenerationEngine(tiny_vlora)
    budget = engine.merge_threshold + 4
    (result,) = engine.generate(requests_for(tiny_vlora, images, budget, indices=[0]))
    assert result.delta_paths == {"merged"}
    assert result.token_ids == plain(tiny_vlora, images, 0, budget, delta_mode="merged")
    assert result.token_ids == plain(tiny_vlora, images, 0, budget, delta_mode="factorised")
    after = tiny_vlora.llm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # unmerged bit for bit


def test_engine_unmerges_when_another_request_arrives(tiny_vlora, images) -> None:
    engine = GenerationEngine(tiny_vlora)
    budget = engine.merge_threshold + 8
    first, second = requests_for(tiny_vlora, images, [budget, 6, 6, 6, 6, 6], indices=[0, 1])
    results = {"0": CompletedRequest("0", ""), "1": CompletedRequest("1", "")}
    engine.add_request(first)
    for _ in range(4):
        for output in engine.step():
            results[output.request_id].add(output)
    assert engine.runner.merged
    engine.add_request(second)
    while engine.has_work():
        for output in engine.step():
            results[output.request_id].add(output)
        assert not (engine.runner.merged and engine.num_running > 1)
    assert results["0"].delta_paths == {"merged", "factorised"}
    assert results["0"].token_ids == plain(tiny_vlora, images, 0, budget)
    assert results["1"].token_ids == plain(tiny_vlora, images, 1, 6)


def test_engine_gqa_model(images) -> None:
    model = build("vlora", "tiny-qwen2")
    engine = GenerationEngine(model, EngineConfig(max_batch_size=4))
    results = engine.generate(requests_for(model, images, 8, indices=[0, 2, 3]))
    for i, result in zip([0, 2, 3], results, strict=True):
        assert result.token_ids == plain(model, images, i, 8)


def test_engine_counts_the_positions_the_llm_reads(tiny_vlora, tiny_baseline, images) -> None:
    text = prompt_ids(tiny_vlora, QUESTIONS[0], True)
    for model, extra in ((tiny_vlora, 0), (tiny_baseline, tiny_baseline.config.vision.num_patches)):
        engine = GenerationEngine(model)
        (result,) = engine.generate(requests_for(model, images, 3, indices=[0]))
        assert result.prompt_tokens == len(text) - 1 + extra  # placeholder removed / replaced


def test_engine_refuses_what_does_not_fit(tiny_vlora, images) -> None:
    engine = GenerationEngine(tiny_vlora)
    (request,) = requests_for(tiny_vlora, images, 4, indices=[2])
    request.sampling = SamplingParams(max_tokens=engine.context_length)
    with pytest.raises(RequestError, match="context"):
        engine.add_request(request)
    with pytest.raises(RequestError, match="placeholder"):
        GenerationRequest(
            "x",
            [5, 6],
            SamplingParams(max_tokens=2),
            requests_for(tiny_vlora, images, 1, indices=[0])[0].conditioning,
        )
    with pytest.raises(RequestError, match="max_tokens"):
        SamplingParams(max_tokens=0)


def test_engine_stop_tokens_and_strings(tiny_vlora, images) -> None:
    engine = GenerationEngine(tiny_vlora)
    free = engine.generate(requests_for(tiny_vlora, images, 16, indices=[0]))[0]
    cut = free.text[3:5]
    (request,) = requests_for(tiny_vlora, images, 16, indices=[0], stop=(cut,))
    (stopped,) = GenerationEngine(tiny_vlora).generate([request])
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index(cut)]
    # a stop token ends the answer (not ignored): the template's end-of-turn id
    engine = GenerationEngine(tiny_vlora)
    stop_id = next(iter(engine.stop_ids))
    engine.stop_ids = {free.token_ids[2]} | {stop_id}
    (request,) = requests_for(tiny_vlora, images, 16, indices=[0])
    request.sampling = SamplingParams(max_tokens=16)
    (ended,) = engine.generate([request])
    assert ended.finish_reason == "stop" and ended.token_ids == free.token_ids[:3]


def test_engine_sampling_is_seeded_per_request(tiny_vlora, images) -> None:
    def run(indices, seed, batch):
        engine = GenerationEngine(tiny_vlora, EngineConfig(max_batch_size=batch))
        reqs = requests_for(tiny_vlora, images, 12, indices=indices, temperature=1.5, seed=seed)
        return [r.token_ids for r in engine.generate(reqs)]

    alone = run([0], 7, 1)[0]
    assert run([1, 0, 3], 7, 3)[1] == alone  # same seed, other rows around it
    assert run([0], 8, 1)[0] != alone
    # top_p small enough keeps only the most likely token: greedy
    engine = GenerationEngine(tiny_vlora)
    reqs = requests_for(tiny_vlora, images, 12, indices=[0], temperature=1.0, top_p=1e-6, seed=1)
    assert engine.generate(reqs)[0].token_ids == plain(tiny_vlora, images, 0, 12)


def test_engine_abort_frees_the_row(tiny_vlora, images) -> None:
    engine = GenerationEngine(tiny_vlora, EngineConfig(max_batch_size=2))
    reqs = requests_for(tiny_vlora, images, [20, 5, 5, 5, 5, 5], indices=[0, 1])
    for r in reqs:
        engine.add_request(r)
    engine.step()
    engine.abort("0")
    outputs = engine.step()
    assert [o.finish_reason for o in outputs if o.request_id == "0"] == ["abort"]
    assert engine.num_running == 1
    results = {"1": CompletedRequest("1", "")}
    while engine.has_work():
        for output in engine.step():
            results[output.request_id].add(output)
    assert engine.num_running == 0
