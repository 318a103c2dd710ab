"""Captioner protocol and the factory that picks a backend from Settings."""

from __future__ import annotations

from typing import Protocol

from pipeline.attributes import AttributeSpec
from pipeline.models import CaptionResult, NormalizedImage, Usage


class Captioner(Protocol):
    model_id: str  # part of the caption-cache key: same image + same model_id -> reuse

    def warm_up(self) -> None:
        """Fail fast (ConfigError) when the backend cannot work at all."""

    def caption(self, image: NormalizedImage, questions: list[AttributeSpec]) -> tuple[CaptionResult, Usage]:
        """Caption + raw answers for one normalized image, and what the call cost."""


def captioner_readiness(captioner: Captioner):
    """A `Readiness` for captioners that can be cold (async endpoint at zero instances), else None."""
    readiness = getattr(captioner, "readiness", None)
    return readiness() if callable(readiness) else None


ENDPOINT_CAPTIONERS = ("sagemaker", "sagemaker-async")  # these caption photo by photo through the SageMaker endpoint
NO_ENDPOINT_PHOTO_BY_PHOTO = ("Photo by photo needs the SageMaker captioning endpoint, which this deployment does not have "
                              "(ENDPOINT_ENABLED=false)")


def photo_by_photo_problem(settings) -> str | None:
    """Why this deployment cannot caption a batch photo by photo (without a full stop, for callers to finish), or None.

    Only the SageMaker captioners (real-time and async) call an endpoint per photo; with ENDPOINT_ENABLED=false (profile
    own-alb-ipv6-batch) there is none, and their photos can only go through batch transform jobs. The local captioner
    and the OpenAI vision captioner need no endpoint: photo by photo is what they do, whatever ENDPOINT_ENABLED says."""
    if settings.endpoint_enabled or settings.captioner not in ENDPOINT_CAPTIONERS:
        return None
    return NO_ENDPOINT_PHOTO_BY_PHOTO


def make_captioner(settings, store=None) -> Captioner:
    """`store` keeps the async captioner's journal of paid-for requests (required for sagemaker-async)."""
    if settings.captioner == "sagemaker-async":
        from pipeline.captioners.sagemaker_async import SageMakerAsyncCaptioner

        return SageMakerAsyncCaptioner.from_settings(settings, store)
    if settings.captioner == "openai-vision":
        from pipeline.captioners.openai_vision import OpenAIVisionCaptioner

        return OpenAIVisionCaptioner.from_settings(settings)
    if settings.captioner == "local":
        from pipeline.captioners.local import LocalCaptioner

        return LocalCaptioner(settings.caption_model, max_new_tokens=settings.max_new_tokens)
    from pipeline.captioners.sagemaker_runtime import SageMakerCaptioner

    return SageMakerCaptioner.from_settings(settings)
