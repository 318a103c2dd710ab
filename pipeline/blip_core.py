"""Model-side captioning: load BLIP or BLIP-2 and answer a caption prompt plus attribute questions.

Shared by the in-process `LocalCaptioner` and the SageMaker handler (`sagemaker/code/inference.py`,
which ships a copy of this file made by `sagemaker/package.py`). So this module imports only
torch, transformers and Pillow — nothing else from `pipeline`.

Why one batched `generate`: the vision encoder (and BLIP-2's Q-Former) is the expensive part of a
short answer. It runs once per image; all prompts then decode together as one batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

DEFAULT_MAX_NEW_TOKENS = 30
MAX_NEW_TOKENS_CAP = 64  # bounds worst-case latency whatever a request asks for


class ModelLoadError(RuntimeError):
    """The weights could not be loaded; the message says how to fix it."""


@dataclass(frozen=True)
class Question:
    name: str
    question: str  # asked of question-answering models (BLIP-2)
    prefix: str = ""  # conditional-caption start for caption-only models (BLIP)


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    kind: str  # "blip" or "blip-2"
    model_id: str
    revision: str | None
    device: torch.device
    dtype: torch.dtype
    is_encoder_decoder: bool = True


@dataclass
class Answers:
    caption: str
    answers: dict[str, str]
    latency_ms: float


def pick_device(prefer: str | None = None) -> torch.device:
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_captioning_model(
    source: str,
    *,
    revision: str | None = None,
    device: str | None = None,
    load_in_8bit: bool = False,
) -> LoadedModel:
    """Load weights + processor from a local directory or a Hugging Face id. fp16 on CUDA, fp32 on CPU."""
    from transformers import AutoConfig, AutoProcessor

    target = pick_device(device)
    dtype = torch.float16 if target.type == "cuda" else torch.float32
    kwargs: dict[str, Any] = {"revision": revision}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        model_class = _model_class(config.model_type)
        model_kwargs: dict[str, Any] = {"dtype": dtype}
        if load_in_8bit:
            from transformers import BitsAndBytesConfig

            model_kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            model_kwargs["device_map"] = "auto"
        model = model_class.from_pretrained(source, **kwargs, **model_kwargs)
        processor = AutoProcessor.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"Could not load the captioning model '{source}': {(str(exc).splitlines() or [type(exc).__name__])[0][:200].rstrip('. ')}. "
            "If this machine is offline, download the model once where there is internet "
            "(`hf download <model-id>`) or point CAPTION_MODEL at a local model directory "
            "(`python -m pipeline make-test-model DIR` writes a tiny one for demos)."
        ) from exc
    if config.model_type == "blip-2":
        _check_image_tokens(source, config, processor)
    if not load_in_8bit:
        model = model.to(target)
    model.eval()
    kind = "blip-2" if config.model_type == "blip-2" else "blip"
    is_encoder_decoder = bool(getattr(getattr(config, "text_config", None), "is_encoder_decoder", False))
    if kind == "blip-2" and not is_encoder_decoder:
        processor.tokenizer.padding_side = "left"  # decoder-only LMs (OPT) continue from the right edge
    return LoadedModel(model, processor, kind, source, revision, target, dtype, is_encoder_decoder)


def _check_image_tokens(source: str, config, processor) -> None:
    """BLIP-2 reads the photo through `num_query_tokens` image tokens the processor puts in front of each
    prompt. A processor without that number inserts none, and every caption silently ignores the photo."""
    expected = getattr(config, "num_query_tokens", None)
    found = getattr(processor, "num_query_tokens", None)
    if not expected or found != expected:
        raise ModelLoadError(
            f"The processor of '{source}' inserts {found or 0} image tokens but the model reads {expected}: "
            "captions would ignore the photo. Use a model revision whose processor_config.json sets num_query_tokens."
        )


def _model_class(model_type: str):
    from transformers import BlipForConditionalGeneration, BlipForQuestionAnswering, Blip2ForConditionalGeneration

    if model_type == "blip-2":
        return Blip2ForConditionalGeneration
    if model_type == "blip":
        return BlipForConditionalGeneration
    if model_type == "blip_vqa":
        return BlipForQuestionAnswering
    raise ModelLoadError(f"Model type '{model_type}' is not a BLIP or BLIP-2 captioner.")


def blip2_prompts(caption_prompt: str, questions: list[Question]) -> list[str]:
    return [caption_prompt] + [f"Question: {q.question} Answer:" for q in questions]


@torch.inference_mode()
def caption_and_answer(
    loaded: LoadedModel,
    image: Image.Image,
    questions: list[Question],
    *,
    caption_prompt: str = "",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> Answers:
    """Caption + one answer per question for one image, deterministic (greedy) decoding."""
    started = time.perf_counter()
    max_new_tokens = max(1, min(int(max_new_tokens), MAX_NEW_TOKENS_CAP))
    image = image.convert("RGB")
    if loaded.kind == "blip-2":
        texts = _blip2_batched(loaded, image, blip2_prompts(caption_prompt, questions), max_new_tokens)
    else:
        texts = _blip_prefixes(loaded, image, [caption_prompt] + [q.prefix for q in questions], max_new_tokens)
    answers = {q.name: text for q, text in zip(questions, texts[1:])}
    return Answers(caption=texts[0], answers=answers, latency_ms=(time.perf_counter() - started) * 1000)


def _blip2_batched(loaded: LoadedModel, image: Image.Image, prompts: list[str], max_new_tokens: int) -> list[str]:
    """All prompts in one `generate`, vision encoder + Q-Former run once and shared across the batch."""
    model, processor = loaded.model, loaded.processor
    inputs = processor(images=[image], text=prompts, return_tensors="pt", padding=True)
    pixel_values = inputs["pixel_values"][:1].to(loaded.device, loaded.dtype)
    input_ids = inputs["input_ids"].to(loaded.device)
    attention_mask = inputs["attention_mask"].to(loaded.device)
    features = model.get_image_features(pixel_values=pixel_values).pooler_output  # (1, queries, lm_hidden)
    embeds = model.get_input_embeddings()(input_ids)
    features = features.to(embeds.device, embeds.dtype).expand(len(prompts), -1, -1)
    is_image_token = input_ids == model.config.image_token_id
    if not bool((is_image_token.sum(dim=1) == features.shape[1]).all()):
        raise RuntimeError("The prompts do not carry one image token per query; the photo would be ignored.")
    image_mask = is_image_token.unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(image_mask, features)
    generate_kwargs: dict[str, Any] = dict(
        inputs_embeds=embeds, attention_mask=attention_mask, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1
    )
    if not loaded.is_encoder_decoder:
        generate_kwargs["input_ids"] = input_ids
    output = model.language_model.generate(**generate_kwargs)
    if not loaded.is_encoder_decoder:
        output = output[:, input_ids.shape[1] :]
    return [text.strip() for text in processor.tokenizer.batch_decode(output, skip_special_tokens=True)]


def _blip_prefixes(loaded: LoadedModel, image: Image.Image, prefixes: list[str], max_new_tokens: int) -> list[str]:
    """BLIP-1 captioners continue a text prefix; prefixes differ in length, so each decodes on its own
    (right-padded batches would break a decoder-only continuation) while the vision features are shared."""
    model, processor = loaded.model, loaded.processor
    pixel_values = processor(images=[image], return_tensors="pt")["pixel_values"].to(loaded.device, loaded.dtype)
    image_embeds = model.vision_model(pixel_values=pixel_values)[0]
    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
    text_config = model.config.text_config
    results = []
    for prefix in prefixes:
        ids = processor.tokenizer(prefix, return_tensors="pt")["input_ids"].to(loaded.device)
        ids[:, 0] = text_config.bos_token_id
        output = model.text_decoder.generate(
            input_ids=ids[:, :-1],
            eos_token_id=text_config.sep_token_id,
            pad_token_id=text_config.pad_token_id,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
        )
        text = processor.tokenizer.decode(output[0], skip_special_tokens=True).strip()
        if prefix and text.lower().startswith(prefix.lower()):
            text = text[len(prefix) :].strip()
        results.append(text)
    return results
