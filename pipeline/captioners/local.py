"""In-process BLIP / BLIP-2 captioning with transformers (CAPTIONER=local)."""

from __future__ import annotations

import io
import threading
import time

from PIL import Image

from pipeline.attributes import AttributeSpec
from pipeline.errors import ConfigError
from pipeline.models import CaptionResult, NormalizedImage, Usage


class LocalCaptioner:
    """Loads the model once, on first use, and serialises inference (torch already uses every core)."""

    def __init__(self, model_source: str, *, max_new_tokens: int = 30, caption_prompt: str = "") -> None:
        self.model_id = model_source
        self.max_new_tokens = max_new_tokens
        self.caption_prompt = caption_prompt
        self._loaded = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        self._model()

    def _model(self):
        with self._lock:
            if self._loaded is None:
                from pipeline import blip_core

                try:
                    self._loaded = blip_core.load_captioning_model(self.model_id)
                except blip_core.ModelLoadError as exc:
                    raise ConfigError(str(exc)) from exc
            return self._loaded

    def caption(self, image: NormalizedImage, questions: list[AttributeSpec]) -> tuple[CaptionResult, Usage]:
        from pipeline import blip_core

        loaded = self._model()
        prompts = [blip_core.Question(q.name, q.question, q.prefix) for q in questions]
        started = time.perf_counter()
        with Image.open(io.BytesIO(image.jpeg)) as picture, self._lock:
            answers = blip_core.caption_and_answer(
                loaded, picture, prompts, caption_prompt=self.caption_prompt, max_new_tokens=self.max_new_tokens
            )
        latency = (time.perf_counter() - started) * 1000
        result = CaptionResult(caption=answers.caption, answers=answers.answers, model_id=self.model_id, latency_ms=latency)
        return result, Usage(kind="local", model=self.model_id, latency_ms=latency)
