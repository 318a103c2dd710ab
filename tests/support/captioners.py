"""A fast stand-in for the captioning endpoint shared by the runner and lease tests."""

from __future__ import annotations

import threading
from collections import Counter

from pipeline.errors import ServiceError
from pipeline.models import CaptionResult, Usage

WAIT = 60  # upper bound for Events; passing tests never wait this long


class CountingCaptioner:
    """Answers at once (or when `gate` opens); counts calls per photo; fails the photos in `fail_on` as a throttled
    endpoint would. Subclasses set `model_id` and `default_answers`."""

    model_id = "counting"
    default_answers: dict[str, str] = {}

    def __init__(self, gate: threading.Event | None = None, fail_on: set[str] | None = None, answers=None) -> None:
        self.calls: Counter[str] = Counter()
        self.entered = threading.Event()
        self.gate, self.fail_on = gate, fail_on or set()
        self.answers = answers if answers is not None else dict(self.default_answers)
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        pass

    def caption(self, image, questions):
        with self._lock:
            self.calls[image.content_key] += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(WAIT)
        if image.content_key in self.fail_on:
            raise ServiceError("The captioning endpoint is busy (throttled); try again shortly.")
        return (CaptionResult(caption="a red shirt", answers=dict(self.answers), model_id=self.model_id),
                Usage(kind="endpoint", model=self.model_id, invocations=1))
