"""Captioning through a SageMaker real-time endpoint (CAPTIONER=sagemaker)."""

from __future__ import annotations

import time
from typing import Any

from pipeline.attributes import AttributeSpec
from pipeline.captioners.contract import build_request, endpoint_error, parse_response
from pipeline.errors import ConfigError, ServiceError
from pipeline.models import CaptionResult, NormalizedImage, Usage


class SageMakerCaptioner:
    def __init__(self, client: Any, endpoint_name: str, *, max_new_tokens: int = 30, caption_prompt: str = "") -> None:
        self.client = client
        self.endpoint_name = endpoint_name
        self.max_new_tokens = max_new_tokens
        self.caption_prompt = caption_prompt
        # The cache key names the endpoint: a redeploy with another model should use a new endpoint name
        # or turn the cache off (CAPTION_CACHE=false).
        self.model_id = f"sagemaker:{endpoint_name}"

    @classmethod
    def from_settings(cls, settings) -> "SageMakerCaptioner":
        import boto3
        from botocore.config import Config

        config = Config(
            region_name=settings.aws_region,
            retries={"max_attempts": 4, "mode": "adaptive"},  # backs off on throttling
            connect_timeout=5,
            read_timeout=settings.sagemaker_timeout_s,
        )
        client = boto3.client("sagemaker-runtime", config=config, endpoint_url=settings.sagemaker_runtime_url or None)
        return cls(client, settings.sagemaker_endpoint, max_new_tokens=settings.max_new_tokens)

    def warm_up(self) -> None:
        """Nothing to load; endpoint state is checked per call so a stopped endpoint fails items, not the app."""

    def caption(self, image: NormalizedImage, questions: list[AttributeSpec]) -> tuple[CaptionResult, Usage]:
        body = build_request(image.jpeg, questions, caption_prompt=self.caption_prompt, max_new_tokens=self.max_new_tokens)
        started = time.perf_counter()
        raw = self._invoke(body)
        latency = (time.perf_counter() - started) * 1000
        data = parse_response(raw)
        result = CaptionResult(caption=data["caption"], answers=data["answers"], model_id=self.model_id, latency_ms=latency)
        return result, Usage(kind="endpoint", model=data["model_id"] or self.endpoint_name, invocations=1, latency_ms=latency)

    def _invoke(self, body: bytes) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

        try:
            response = self.client.invoke_endpoint(
                EndpointName=self.endpoint_name, ContentType="application/json", Accept="application/json", Body=body
            )
            return response["Body"].read()
        except ClientError as exc:
            raise self._explain(exc) from exc
        except (ConnectTimeoutError, ReadTimeoutError) as exc:
            raise ServiceError(f"The captioning endpoint {self.endpoint_name} did not answer in time; try again.") from exc
        except BotoCoreError as exc:
            raise ServiceError(f"The captioning endpoint {self.endpoint_name} could not be reached ({type(exc).__name__}).") from exc

    def _explain(self, exc) -> Exception:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", "")
        name = self.endpoint_name
        if code == "ValidationError" and "not found" in message.lower():
            return ServiceError(f"The captioning endpoint {name} is not running (stopped or not deployed). An admin can start it on the Admin page.")
        if code == "ModelNotReadyException":
            return ServiceError(f"The captioning endpoint {name} is still starting up; try again in a few minutes.")
        if code in ("ThrottlingException", "TooManyRequestsException"):
            return ServiceError(f"The captioning endpoint {name} is busy (throttled); try again shortly.")
        if code == "ModelError":
            return endpoint_error(exc.response.get("OriginalMessage") or message, int(exc.response.get("OriginalStatusCode") or 0) or None)
        if code in ("AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"):
            return ConfigError(f"This dashboard is not allowed to call the endpoint {name} ({code}).")
        return ServiceError(f"The captioning endpoint {name} failed ({code or 'unknown error'}); try again later.")

