"""The engine on its own thread, for asyncio servers: requests in, incremental outputs out.

    engine = AsyncEngine(GenerationEngine(model, config))
    async for output in engine.generate(request):   # RequestOutput, the last one finished
        ...

One thread owns the model and runs `GenerationEngine.step` while there is work; requests and
cancellations reach it through thread-safe queues and are taken in between steps, so a new
request joins at the next step. Outputs go back to each caller's event loop. A caller that stops
iterating (the client disconnected) aborts its request, which frees its row at the next step.

A step that raises fails the requests it held (each gets a finished output with the error) and
the engine is reset, so one bad batch does not take the server down.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from vlora.serving.engine import GenerationEngine
from vlora.serving.engine_config import EngineOverloadedError
from vlora.serving.requests import GenerationRequest, RequestError, RequestOutput

logger = logging.getLogger(__name__)


class EngineDeadError(RuntimeError):
    """The engine thread is gone (shut down, or crashed)."""


@dataclass
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue


class AsyncEngine:
    def __init__(self, engine: GenerationEngine, idle_poll_s: float = 0.05) -> None:
        self.engine = engine
        self._incoming: queue.SimpleQueue[tuple[GenerationRequest, _Subscriber]] = (
            queue.SimpleQueue()
        )
        self._aborts: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._subscribers: dict[str, _Subscriber] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle_poll_s = idle_poll_s
        self.failed_steps = 0
        self.last_error: str | None = None
        self.started_at = time.time()
        self._thread = threading.Thread(target=self._run, name="vlora-engine", daemon=True)
        self._thread.start()

    # ----- caller side (any event loop) --------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[RequestOutput]:
        """Outputs of `request` as the engine produces them; raises RequestError or
        EngineOverloadedError when it is refused, EngineDeadError when the engine is gone."""
        if not self.alive:
            raise EngineDeadError("the generation engine is not running")
        subscriber = _Subscriber(asyncio.get_running_loop(), asyncio.Queue())
        request_id = request.request_id
        self._incoming.put((request, subscriber))
        self._wake.set()
        finished = False
        try:
            while True:
                item = await subscriber.outputs.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finished:
                    finished = True
                    return
        finally:
            if not finished:
                self._aborts.put(request_id)  # the caller stopped listening
                self._wake.set()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def stats(self) -> dict[str, Any]:
        return {
            "running": self.engine.num_running,
            "waiting": self.engine.num_waiting,
            "failed_steps": self.failed_steps,
            "last_error": self.last_error,
            "alive": self.alive,
            **self.engine.stats.to_dict(),
        }

    # ----- engine thread -----------------------------------------------------------------------
    def _deliver(self, request_id: str, item: RequestOutput | BaseException) -> None:
        subscriber = self._subscribers.get(request_id)
        if subscriber is None:
            return
        if isinstance(item, BaseException) or item.finished:
            self._subscribers.pop(request_id, None)
        try:
            subscriber.loop.call_soon_threadsafe(subscriber.outputs.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody is listening any more
            self.engine.abort(request_id)

    def _take_new_requests(self) -> None:
        while True:
            try:
                request, subscriber = self._incoming.get_nowait()
            except queue.Empty:
                return
            if request.request_id in self._subscribers:
                error = RequestError(f"request id {request.request_id!r} is already running")
                subscriber.loop.call_soon_threadsafe(subscriber.outputs.put_nowait, error)
                continue
            self._subscribers[request.request_id] = subscriber
            try:
                self.engine.add_request(request)
            except (RequestError, EngineOverloadedError) as err:
                self._deliver(request.request_id, err)

    def _take_aborts(self) -> None:
        while True:
            try:
                request_id = self._aborts.get_nowait()
            except queue.Empty:
                return
            if self._subscribers.pop(request_id, None) is not None:
                self.engine.abort(request_id)

    def _run(self) -> None:
        import torch

        with torch.no_grad():
            while not self._stop.is_set():
                self._take_new_requests()
                self._take_aborts()
                if not self.engine.has_work():
                    self._wake.wait(self._idle_poll_s)
                    self._wake.clear()
                    continue
                try:
                    outputs = self.engine.step()
                except Exception as err:  # fail what the step held, keep serving
                    self.failed_steps += 1
                    self.last_error = f"{type(err).__name__}: {err}"
                    logger.exception("generation step failed; failing its requests")
                    for request_id in self.engine.reset():
                        self._deliver(request_id, RuntimeError(f"generation failed: {err}"))
                    continue
                for output in outputs:
                    self._deliver(output.request_id, output)
        for request_id in self.engine.reset():
            self._deliver(request_id, EngineDeadError("the generation engine shut down"))
