"""Iteration-level batching of generation requests, each with its own image's deltas.

    engine = GenerationEngine(model, EngineConfig(max_batch_size=8))
    engine.add_request(GenerationRequest("a", prompt_ids, SamplingParams(max_tokens=32), cond))
    while engine.has_work():
        for output in engine.step(): ...   # incremental RequestOutput per advanced request

What serving engines do (vLLM, TGI), for VLoRA's per-request weights:

- **Join at the next step, leave when done.** A step is either a *prefill* of waiting requests
  (as many as free rows and `max_prefill_tokens` allow, batched, left-padded) or one *decode*
  step of every running request. Prefill and decode alternate while requests wait, so running
  requests keep producing tokens under a stream of arrivals. A finished request frees its row
  at once (the last row moves into it: `SlotKVCache.move`).
- **Per-request deltas, factorised.** Each row's W_v lives in `DeltaSlots`; text-only rows are
  zero (ΔW = 0); a batch without images runs without the low-rank branches at all. The
  baseline splices its visual tokens at prefill instead.
- **Merged path for a lone request.** When exactly one request with an image runs, nothing
  waits, and it has at least the device's `MERGE_MIN_NEW_TOKENS(_BY_DEVICE)` tokens left, its
  deltas are merged into the weights (decoding then costs the base LLM); the moment another
  request arrives the weights are restored bit for bit and it continues factorised.

Greedy answers do not depend on the batch a request lands in beyond float rounding: every path
is compared with `model.generate` in the tests, token for token.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from vlora.data.templates import get_template
from vlora.data.tokenize import stop_token_ids
from vlora.model import MERGE_MIN_NEW_TOKENS, MERGE_MIN_NEW_TOKENS_BY_DEVICE
from vlora.serving.designs import DesignRunner, make_runner, prefill
from vlora.serving.engine_config import EngineConfig, EngineOverloadedError, EngineStats
from vlora.serving.kv_cache import SlotKVCache
from vlora.serving.requests import (
    CompletedRequest,
    FinishReason,
    GenerationRequest,
    RequestError,
    RequestOutput,
)
from vlora.serving.sampling import choose_tokens, request_generator
from vlora.serving.text_stream import TextStream

logger = logging.getLogger(__name__)


@dataclass
class _Sequence:
    request: GenerationRequest
    prompt_positions: int
    stream: TextStream
    generator: torch.Generator | None
    slot: int = -1
    generated: list[int] = field(default_factory=list)
    arrived: float = field(default_factory=time.perf_counter)

    @property
    def remaining(self) -> int:
        return self.request.sampling.max_tokens - len(self.generated)


class GenerationEngine:
    def __init__(self, model, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.model = model
        self.llm = model.llm
        _check_full_attention(self.llm.config)
        self.tokenizer = model.tokenizer
        self.runner: DesignRunner = make_runner(model, self.config.max_batch_size)
        param = next(self.llm.parameters())
        self.device = param.device
        self.cache = SlotKVCache(
            self.llm.config,
            self.config.max_batch_size,
            param.dtype,
            param.device,
            self.config.kv_initial_capacity,
        )
        self.context_length = int(self.llm.config.max_position_embeddings)
        template = get_template(model.config.template)
        self.stop_ids = set(stop_token_ids(self.tokenizer, template))
        self.merge_threshold = MERGE_MIN_NEW_TOKENS_BY_DEVICE.get(
            self.device.type, MERGE_MIN_NEW_TOKENS
        )
        self._sdpa = getattr(self.llm.config, "_attn_implementation", "sdpa") == "sdpa"
        self.waiting: deque[_Sequence] = deque()
        self.running: list[_Sequence] = []  # running[i] sits in row i of the cache
        self._aborted: set[str] = set()
        self._last_step_prefilled = False
        self.stats = EngineStats()

    # ----- requests ----------------------------------------------------------------------------
    def prompt_positions(self, request: GenerationRequest) -> int:
        return self.runner.prompt_positions(request)

    def check(self, request: GenerationRequest) -> int:
        """Raise RequestError when the request cannot be served; returns its prompt positions."""
        positions = self.prompt_positions(request)
        if request.conditioning is not None and request.conditioning.kind != self.runner.kind:
            raise RequestError(
                f"image conditioning for '{request.conditioning.kind}' sent to a "
                f"'{self.runner.kind}' model"
            )
        needed = positions + request.sampling.max_tokens
        if needed > self.context_length:
            raise RequestError(
                f"this model's context is {self.context_length} tokens; the prompt takes "
                f"{positions} and max_tokens asks for {request.sampling.max_tokens} more",
                code="context_length_exceeded",
            )
        return positions

    def add_request(self, request: GenerationRequest) -> None:
        positions = self.check(request)
        free_rows = self.config.max_batch_size - len(self.running)
        if len(self.waiting) - free_rows >= self.config.max_waiting:
            raise EngineOverloadedError(
                f"{len(self.waiting)} requests are already waiting for "
                f"{self.config.max_batch_size} rows (engine.max_waiting)"
            )
        self.waiting.append(
            _Sequence(
                request=request,
                prompt_positions=positions,
                stream=TextStream(self.tokenizer, request.sampling.stop),
                generator=request_generator(request.sampling),
            )
        )

    def abort(self, request_id: str) -> None:
        """Stop a request at the next step (the client went away); it ends with 'abort'."""
        self._aborted.add(request_id)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self._aborted)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    # ----- steps -------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        outputs = self._drop_aborted()
        free = self.config.max_batch_size - len(self.running)
        if self.waiting and free > 0 and (not self.running or not self._last_step_prefilled):
            outputs += self._prefill_step(free)
            self._last_step_prefilled = True
        elif self.running:
            outputs += self._decode_step()
            self._last_step_prefilled = False
        return outputs

    def generate(self, requests: Iterable[GenerationRequest]) -> list[CompletedRequest]:
        """Serve `requests` to the end (all queued at once); results in the same order."""
        requests = list(requests)
        results = {r.request_id: CompletedRequest(r.request_id, "") for r in requests}
        for request in requests:
            self.add_request(request)
        while self.has_work():
            for output in self.step():
                results[output.request_id].add(output)
        return [results[r.request_id] for r in requests]

    def reset(self) -> list[str]:
        """Drop every request (after a failed step); returns their ids."""
        ids = [s.request.request_id for s in [*self.running, *self.waiting]]
        self.running.clear()
        self.waiting.clear()
        self._aborted.clear()
        self.runner.reset()
        for slot in range(self.config.max_batch_size):
            self.cache.clear(slot)
        return ids

    # ----- internals ---------------------------------------------------------------------------
    def _drop_aborted(self) -> list[RequestOutput]:
        if not self._aborted:
            return []
        outputs = []
        for seq in [s for s in self.waiting if s.request.request_id in self._aborted]:
            self.waiting.remove(seq)
            outputs.append(self._final(seq, "abort", ""))
        gone = [s for s in self.running if s.request.request_id in self._aborted]
        for seq in gone:
            outputs.append(self._final(seq, "abort", ""))
        self._release(gone)
        self._aborted.clear()
        return outputs

    def _admit(self, free: int) -> list[_Sequence]:
        joiners: list[_Sequence] = []
        budget = self.config.max_prefill_tokens
        while self.waiting and len(joiners) < free:
            positions = self.waiting[0].prompt_positions
            if joiners and positions > budget:
                break
            joiners.append(self.waiting.popleft())
            budget -= positions
        return joiners

    def _may_merge(self, seq: _Sequence) -> bool:
        return (
            self.runner.supports_merge
            and self.config.merge_lone_requests
            and seq.request.has_image
            and not self.waiting
            and seq.remaining >= self.merge_threshold
        )

    def _prefill_step(self, free: int) -> list[RequestOutput]:
        started = time.perf_counter()
        joiners = self._admit(free)
        if self.runner.merged:
            self.runner.unmerge()  # new rows bring their own deltas
        start = len(self.running)
        for offset, seq in enumerate(joiners):
            seq.slot = start + offset
            self.runner.write(seq.slot, seq.request.conditioning)
        if not self.running and len(joiners) == 1 and self._may_merge(joiners[0]):
            self.runner.merge(start)
        path = self.runner.set_rows(start, start + len(joiners))
        kind, rows = self.runner.prefill_rows([s.request for s in joiners])
        logits = prefill(
            self.llm,
            self.cache,
            [s.slot for s in joiners],
            kind,
            rows,
            self.runner.pad_id,
        )
        self.running.extend(joiners)
        outputs = self._advance(joiners, logits, path)
        self.stats.prefill_steps += 1
        self.stats.prefill_positions += sum(s.prompt_positions for s in joiners)
        self.stats.prefill_seconds += time.perf_counter() - started
        return outputs

    def _decode_step(self) -> list[RequestOutput]:
        started = time.perf_counter()
        batch = len(self.running)
        if batch == 1 and not self.runner.merged and self._may_merge(self.running[0]):
            self.runner.merge(0)
        elif batch > 1 and self.runner.merged:
            self.runner.unmerge()
        path = self.runner.set_rows(0, batch)
        tokens = torch.tensor([[s.generated[-1]] for s in self.running], device=self.device)
        positions, mask = self.cache.begin_decode(batch)
        if not self._sdpa:  # eager attention adds the mask: 0 where allowed, -inf elsewhere
            dtype = next(self.llm.parameters()).dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=self.device).masked_fill(
                ~mask, torch.finfo(dtype).min
            )
        try:
            with torch.no_grad():
                out = self.llm(
                    input_ids=tokens,
                    attention_mask=mask,
                    position_ids=positions,
                    cache=self.cache,
                    use_cache=True,
                )
        finally:
            self.cache.end_decode()
        outputs = self._advance(list(self.running), out.logits[:, -1], path)
        self.stats.decode_steps += 1
        self.stats.merged_decode_steps += path == "merged"
        entry = self.stats.decode_by_batch[batch]
        entry[0] += 1
        entry[1] += time.perf_counter() - started
        return outputs

    def _advance(
        self, seqs: list[_Sequence], logits: torch.Tensor, path: str
    ) -> list[RequestOutput]:
        """Sample one token per sequence (logits [n, V], in `seqs` order), emit, finish."""
        tokens = choose_tokens(
            logits, [s.request.sampling for s in seqs], [s.generator for s in seqs]
        )
        outputs, done = [], []
        for seq, token in zip(seqs, tokens, strict=True):
            seq.generated.append(token)
            self.stats.generated_tokens += 1
            sampling = seq.request.sampling
            reason: FinishReason | None = None
            if token in self.stop_ids and not sampling.ignore_eos:
                text, reason = seq.stream.finish(), "stop"
            else:
                at_limit = (
                    len(seq.generated) >= sampling.max_tokens
                    or seq.prompt_positions + len(seq.generated) >= self.context_length
                )
                text = seq.stream.add(token, last=at_limit)
                if seq.stream.stopped:
                    reason = "stop"
                elif at_limit:
                    reason = "length"
            outputs.append(self._output(seq, text, [token], reason, path))
            if reason is not None:
                done.append(seq)
        self._release(done)
        return outputs

    def _output(
        self,
        seq: _Sequence,
        text: str,
        tokens: list[int],
        reason: FinishReason | None,
        path: str = "",
        error: str | None = None,
    ) -> RequestOutput:
        if reason is not None:
            self.stats.finished[reason] += 1
        return RequestOutput(
            request_id=seq.request.request_id,
            text=text,
            token_ids=tokens,
            prompt_tokens=seq.prompt_positions,
            completion_tokens=len(seq.generated),
            finished=reason is not None,
            finish_reason=reason,
            error=error,
            delta_path=path,
        )

    def _final(self, seq: _Sequence, reason: FinishReason, text: str) -> RequestOutput:
        return self._output(seq, text, [], reason)

    def _release(self, seqs: list[_Sequence]) -> None:
        """Free the rows of finished sequences; the last row moves into each gap."""
        for seq in sorted(seqs, key=lambda s: s.slot, reverse=True):
            last = len(self.running) - 1
            if seq.slot != last:
                moved = self.running[last]
                self.cache.move(last, seq.slot)
                self.runner.move(last, seq.slot)
                moved.slot = seq.slot
                self.running[seq.slot] = moved
            else:
                self.cache.clear(last)
            self.running.pop()
            seq.slot = -1
        if not self.running and self.runner.merged:
            self.runner.unmerge()


def _check_full_attention(config) -> None:
    layer_types = getattr(config, "layer_types", None) or []
    other = sorted({t for t in layer_types if t != "full_attention"})
    if other:
        raise ValueError(
            f"the serving engine's KV cache supports full attention only; this LLM has {other}"
        )
