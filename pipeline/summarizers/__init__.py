"""Summarizer protocol and the factory that picks a backend from Settings."""

from __future__ import annotations

from typing import Protocol

from pipeline.attributes import AttributeSchema
from pipeline.models import SummaryRequest, SummaryResult


class Summarizer(Protocol):
    name: str

    def summarize(self, request: SummaryRequest) -> SummaryResult:
        """Title, tags and a <= 50-word summary for one product."""


def make_summarizer(settings, schema: AttributeSchema) -> Summarizer:
    if settings.summarizer == "openai":
        from pipeline.summarizers.openai_summarizer import OpenAISummarizer

        return OpenAISummarizer.from_settings(settings, schema)
    from pipeline.summarizers.offline import OfflineSummarizer

    return OfflineSummarizer(schema)


def make_batch_summarizer(settings, summarizer: Summarizer, store):
    """The OpenAI Batch API path for `summarizer` (None unless it is OpenAI's); see openai_batch.py."""
    if getattr(summarizer, "name", None) != "openai":
        return None
    from pipeline.summarizers.openai_batch import OpenAIBatchSummarizer

    return OpenAIBatchSummarizer.from_settings(settings, summarizer, store)
