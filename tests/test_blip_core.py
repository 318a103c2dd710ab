"""pipeline/blip_core.py, the model side shared by the local captioner and the SageMaker handler, on tiny random
checkpoints of the three kinds it loads: BLIP-2 with T5 (the product's `blip2-flan-t5-xl`), BLIP-2 with a
decoder-only OPT, and BLIP-1. The oracle is each model's own `generate`, one prompt at a time: blip_core's
shared-vision batching must give the same words."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from pipeline import blip_core
from pipeline.testmodel import NUM_QUERY_TOKENS
from support.tiny_models import make_tiny_blip, make_tiny_blip2_opt

QUESTIONS = [
    blip_core.Question("category", "What kind of product is this?", "A photo of a"),  # capitals: the prefix is matched case-blind
    blip_core.Question("color", "What is the main colour of the product?", "the colour of the product is"),
    blip_core.Question("style", "What is the style?", ""),
]


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    image.paste((30, 30, 200), (0, 0, 32, 64))
    return image


@pytest.fixture(scope="module")
def blip2_t5(tiny_model):
    return blip_core.load_captioning_model(str(tiny_model))


@pytest.fixture(scope="module")
def blip2_opt(tmp_path_factory):
    return blip_core.load_captioning_model(str(make_tiny_blip2_opt(tmp_path_factory.mktemp("tiny-blip2-opt"))))


@pytest.fixture(scope="module")
def blip1(tmp_path_factory):
    return blip_core.load_captioning_model(str(make_tiny_blip(tmp_path_factory.mktemp("tiny-blip"))))


def own_generate_blip2(loaded, image, prompt: str, max_new_tokens: int) -> str:
    inputs = loaded.processor(images=image, text=prompt, return_tensors="pt")
    output = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    if not loaded.is_encoder_decoder:  # a decoder-only model returns the prompt, then its answer
        output = output[:, inputs["input_ids"].shape[1]:]
    return loaded.processor.tokenizer.decode(output[0], skip_special_tokens=True).strip()


def own_generate_blip1(loaded, image, prefix: str, max_new_tokens: int) -> str:
    inputs = loaded.processor(images=image, text=prefix or None, return_tensors="pt")
    output = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens)
    text = loaded.processor.tokenizer.decode(output[0], skip_special_tokens=True).strip()
    return text[len(prefix):].strip() if prefix and text.lower().startswith(prefix.lower()) else text


@pytest.mark.parametrize("kind", ["blip2_t5", "blip2_opt"])
def test_blip2_batched_answers_equal_the_models_own_generate_per_prompt(kind, request, photo):
    loaded = request.getfixturevalue(kind)
    got = blip_core.caption_and_answer(loaded, photo, QUESTIONS, caption_prompt="a photo of", max_new_tokens=6)
    prompts = blip_core.blip2_prompts("a photo of", QUESTIONS)
    assert prompts[1] == f"Question: {QUESTIONS[0].question} Answer:"
    expected = [own_generate_blip2(loaded, photo, prompt, 6) for prompt in prompts]
    assert [got.caption, *got.answers.values()] == expected
    assert list(got.answers) == [q.name for q in QUESTIONS]
    assert len(set(expected)) > 1 and all(expected)  # the prompts really differ, and each says something
    assert got.latency_ms > 0


def test_a_decoder_only_blip2_pads_its_prompts_on_the_left(blip2_opt, tiny_model):
    """A right-padded batch makes a decoder-only model continue padding instead of the shorter prompts. (Loaded in
    the test, not taken from the fixtures: mutmut runs a test for a function only when the test's body calls it.)"""
    opt = blip_core.load_captioning_model(blip2_opt.model_id)
    t5 = blip_core.load_captioning_model(str(tiny_model))
    assert (opt.kind, opt.is_encoder_decoder, opt.processor.tokenizer.padding_side) == ("blip-2", False, "left")
    assert (t5.kind, t5.is_encoder_decoder, t5.processor.tokenizer.padding_side) == ("blip-2", True, "right")


def test_blip1_continues_each_prefix_and_drops_it_like_its_own_generate(blip1, photo):
    got = blip_core.caption_and_answer(blip1, photo, QUESTIONS, caption_prompt="", max_new_tokens=6)
    expected = [own_generate_blip1(blip1, photo, prefix, 6) for prefix in ["", *[q.prefix for q in QUESTIONS]]]
    assert [got.caption, *got.answers.values()] == expected
    assert list(got.answers) == [q.name for q in QUESTIONS]
    assert (blip1.kind, blip1.is_encoder_decoder) == ("blip", False)
    assert not got.answers["category"].lower().startswith("a photo of")  # the repeated prefix is gone


def test_blip1_cuts_a_prefix_its_model_repeated_whatever_its_case_and_keeps_an_answer_that_did_not(blip1, photo):
    """The model's raw words decide: "A photo of a" comes back lower-cased (the tokenizer lowercases) and is cut;
    "the colour of the product is" comes back without "the" (not in the tiny vocabulary), so nothing is cut."""
    def raw(prefix: str) -> str:
        inputs = blip1.processor(images=photo, text=prefix, return_tensors="pt")
        return blip1.processor.tokenizer.decode(blip1.model.generate(**inputs, max_new_tokens=6)[0], skip_special_tokens=True).strip()

    got = blip_core.caption_and_answer(blip1, photo, QUESTIONS[:2], max_new_tokens=6)
    repeated, other = raw(QUESTIONS[0].prefix), raw(QUESTIONS[1].prefix)
    assert repeated.startswith("a photo of a ") and got.answers["category"] == repeated[len("a photo of a"):].strip()
    assert not other.lower().startswith(QUESTIONS[1].prefix) and got.answers["color"] == other


class GenerateSpy:
    """Calls the model's real generate and keeps the keyword arguments it was given."""

    def __init__(self, generate):
        self.generate, self.calls = generate, []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self.generate(*args, **kwargs)


@pytest.mark.parametrize(("asked", "used"), [(0, 1), (-5, 1), (7, 7), (64, 64), (65, 64), (1000, 64), ("12", 12)])
@pytest.mark.parametrize("kind", ["blip2_t5", "blip1"])
def test_max_new_tokens_is_held_between_1_and_the_cap(kind, asked, used, request, photo, monkeypatch):
    """A request's max_new_tokens bounds the latency of every prompt: never above 64, never below 1."""
    loaded = request.getfixturevalue(kind)
    decoder = loaded.model.language_model if loaded.kind == "blip-2" else loaded.model.text_decoder
    spy = GenerateSpy(decoder.generate)
    monkeypatch.setattr(decoder, "generate", spy)
    blip_core.caption_and_answer(loaded, photo, QUESTIONS[:1], max_new_tokens=asked)
    assert [call["max_new_tokens"] for call in spy.calls] in ([used], [used, used])  # BLIP-1: one call a prompt
    assert all(call["do_sample"] is False and call["num_beams"] == 1 for call in spy.calls)  # greedy: same photo, same words
    if loaded.kind == "blip":  # as BLIP's own generate: [SEP] ends a caption, [PAD] pads it
        text_config = loaded.model.config.text_config
        assert all((call["eos_token_id"], call["pad_token_id"]) == (text_config.sep_token_id, text_config.pad_token_id)
                   for call in spy.calls)
    assert blip_core.MAX_NEW_TOKENS_CAP == 64 and blip_core.DEFAULT_MAX_NEW_TOKENS == 30


def test_the_default_max_new_tokens_is_30(blip2_t5, photo, monkeypatch):
    spy = GenerateSpy(blip2_t5.model.language_model.generate)
    monkeypatch.setattr(blip2_t5.model.language_model, "generate", spy)
    blip_core.caption_and_answer(blip2_t5, photo, QUESTIONS[:1])
    assert spy.calls[0]["max_new_tokens"] == 30


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_a_photo_in_any_mode_is_read_as_its_rgb_version(mode, blip2_t5, photo):
    other = photo.convert(mode) if mode != "I;16" else photo.convert("L").convert("I;16")
    got = blip_core.caption_and_answer(blip2_t5, other, QUESTIONS, max_new_tokens=4)
    want = blip_core.caption_and_answer(blip2_t5, other.convert("RGB"), QUESTIONS, max_new_tokens=4)
    assert (got.caption, got.answers) == (want.caption, want.answers)


def test_the_loaded_model_is_ready_for_greedy_inference_on_the_cpu(tiny_model):
    loaded = blip_core.load_captioning_model(str(tiny_model))
    assert loaded.model_id == str(tiny_model) and loaded.revision is None
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32  # fp16 only on CUDA
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert not loaded.model.training  # eval(): dropout off, the same photo gives the same words
    assert (loaded.kind, loaded.is_encoder_decoder) == ("blip-2", True)


def test_a_half_precision_checkpoint_runs_in_fp32_on_the_cpu(tiny_model, tmp_path):
    """transformers 5 loads a checkpoint in the dtype it was saved in; many are saved in bf16 or fp16, which a CPU
    runs slowly or not at all."""
    from transformers import Blip2ForConditionalGeneration

    saved = shutil.copytree(tiny_model, tmp_path / "bf16")
    Blip2ForConditionalGeneration.from_pretrained(tiny_model).to(torch.bfloat16).save_pretrained(saved)
    assert next(Blip2ForConditionalGeneration.from_pretrained(saved).parameters()).dtype == torch.bfloat16  # the default
    loaded = blip_core.load_captioning_model(str(saved))
    assert loaded.dtype == torch.float32 and {p.dtype for p in loaded.model.parameters()} == {torch.float32}


def test_a_device_named_by_the_caller_is_where_the_model_goes(tiny_model):
    loaded = blip_core.load_captioning_model(str(tiny_model), device="meta")  # any device but the default one
    assert loaded.device == torch.device("meta") and loaded.dtype == torch.float32
    assert {p.device.type for p in loaded.model.parameters()} == {"meta"}


def test_a_pinned_revision_loads_that_revisions_config_weights_and_processor(tiny_model, tmp_path, monkeypatch):
    """The handler pins BLIP2_MODEL_REVISION: a model id loads that commit, every file of it, not the branch head.
    A Hugging Face cache with two commits of one repo stands in for the hub (HF_HUB_OFFLINE=1 in these tests)."""
    import huggingface_hub.constants
    from safetensors.torch import load_file

    repo = tmp_path / "hub" / "models--acme--captioner"
    old, head = "a" * 40, "b" * 40
    shutil.copytree(tiny_model, repo / "snapshots" / old)  # BLIP-2 (T5)
    make_tiny_blip(repo / "snapshots" / head)  # then the repo became a BLIP-1
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(head)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    pinned = blip_core.load_captioning_model("acme/captioner", revision=old)
    assert (pinned.kind, pinned.revision, pinned.model_id) == ("blip-2", old, "acme/captioner")
    assert type(pinned.processor).__name__ == "Blip2Processor"
    weights = load_file(repo / "snapshots" / old / "model.safetensors")
    state = pinned.model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in weights.items() if name in state)
    latest = blip_core.load_captioning_model("acme/captioner")
    assert (latest.kind, latest.revision, type(latest.processor).__name__) == ("blip", None, "BlipProcessor")


@pytest.mark.parametrize(("device", "dtype"), [("cpu", torch.float32), ("cuda", torch.float16), ("cuda:1", torch.float16)])
def test_8bit_asks_transformers_for_int8_weights_placed_by_accelerate(device, dtype, tiny_model, monkeypatch):
    """bitsandbytes needs a GPU, so what is checked is the request: int8 weights with device_map="auto" (which places
    them; moving a quantized model afterwards is refused), the model left where it was put, and on a GPU the rest of
    the weights in fp16 (nothing here moves to the GPU, so a "cuda" device can be named on this CPU machine)."""
    from transformers import Blip2ForConditionalGeneration

    asked = {}

    class Recorder:
        @staticmethod
        def from_pretrained(source, **kwargs):
            asked.update(kwargs)
            rest = {k: v for k, v in kwargs.items() if k not in ("quantization_config", "device_map")}
            model = Blip2ForConditionalGeneration.from_pretrained(source, **rest)
            model.to = lambda *a, **k: pytest.fail("a quantized model must not be moved")
            return model

    monkeypatch.setattr(blip_core, "_model_class", lambda model_type: Recorder)
    loaded = blip_core.load_captioning_model(str(tiny_model), load_in_8bit=True, device=device)
    quantization = asked["quantization_config"]
    assert quantization.load_in_8bit is True and not quantization.load_in_4bit
    assert asked["device_map"] == "auto" and asked["dtype"] == dtype and asked["revision"] is None
    assert loaded.kind == "blip-2" and loaded.dtype == dtype and loaded.device == torch.device(device)
    plain = {}
    monkeypatch.setattr(Recorder, "from_pretrained", staticmethod(lambda source, **kwargs: plain.update(kwargs) or
                                                                  Blip2ForConditionalGeneration.from_pretrained(source, **kwargs)))
    blip_core.load_captioning_model(str(tiny_model))
    assert "quantization_config" not in plain and "device_map" not in plain


def test_pick_device_takes_what_it_is_told_else_cuda_only_when_there_is_one(monkeypatch):
    assert blip_core.pick_device("cpu") == torch.device("cpu")
    assert blip_core.pick_device("meta") == torch.device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert blip_core.pick_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert blip_core.pick_device() == torch.device("cuda")
    assert blip_core.pick_device(None) == torch.device("cuda")


def test_prompts_without_one_image_token_per_query_are_refused(tiny_model, photo):
    """A processor that inserts too few image tokens would make every caption ignore the photo: refuse."""
    loaded = blip_core.load_captioning_model(str(tiny_model))
    loaded.processor.num_query_tokens = NUM_QUERY_TOKENS - 1
    with pytest.raises(RuntimeError) as refused:
        blip_core.caption_and_answer(loaded, photo, QUESTIONS)
    assert str(refused.value) == "The prompts do not carry one image token per query; the photo would be ignored."


def test_a_processor_without_the_image_token_count_is_refused_at_load(tiny_model, tmp_path):
    broken = shutil.copytree(tiny_model, tmp_path / "model")
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = broken / name
        if path.exists():
            data = json.loads(path.read_text())
            data.pop("num_query_tokens", None)
            path.write_text(json.dumps(data))
    with pytest.raises(blip_core.ModelLoadError) as refused:
        blip_core.load_captioning_model(str(broken))
    assert str(refused.value) == (
        f"The processor of '{broken}' inserts 0 image tokens but the model reads {NUM_QUERY_TOKENS}: captions would ignore "
        "the photo. Use a model revision whose processor_config.json sets num_query_tokens.")


HOW_TO_GET_ONE = (". If this machine is offline, download the model once where there is internet (`hf download <model-id>`) "
                  "or point CAPTION_MODEL at a local model directory (`python -m pipeline make-test-model DIR` writes a "
                  "tiny one for demos).")


def test_a_missing_model_says_why_and_how_to_get_one(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(blip_core.ModelLoadError) as refused:
        blip_core.load_captioning_model(str(missing))
    message, cause = str(refused.value), str(refused.value.__cause__)
    assert message == f"Could not load the captioning model '{missing}': {cause.splitlines()[0].rstrip('. ')}{HOW_TO_GET_ONE}"
    assert str(missing) in cause.splitlines()[0]  # the library's own first line: it names what was not found


def test_a_long_reason_is_cut_to_200_characters(tmp_path):
    missing = tmp_path / ("X" * 240)
    with pytest.raises(blip_core.ModelLoadError) as refused:
        blip_core.load_captioning_model(str(missing))
    first_line = str(refused.value.__cause__).splitlines()[0]
    assert len(first_line) > 200
    assert str(refused.value) == f"Could not load the captioning model '{missing}': {first_line[:200]}{HOW_TO_GET_ONE}"


def test_an_error_without_words_is_named_by_its_kind(tiny_model, monkeypatch):
    from transformers import AutoConfig

    def fails(*args, **kwargs):
        raise OSError()

    monkeypatch.setattr(AutoConfig, "from_pretrained", fails)
    with pytest.raises(blip_core.ModelLoadError) as refused:
        blip_core.load_captioning_model(str(tiny_model))
    assert str(refused.value) == f"Could not load the captioning model '{tiny_model}': OSError{HOW_TO_GET_ONE}"


def test_a_model_that_is_not_blip_is_refused_by_name(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8, "num_attention_heads": 2}))
    with pytest.raises(blip_core.ModelLoadError, match=r"^Model type 'bert' is not a BLIP or BLIP-2 captioner\.$"):
        blip_core.load_captioning_model(str(tmp_path))


@pytest.mark.parametrize(("model_type", "name"), [("blip-2", "Blip2ForConditionalGeneration"), ("blip", "BlipForConditionalGeneration"),
                                                  ("blip_vqa", "BlipForQuestionAnswering")])
def test_each_blip_kind_loads_with_its_own_class(model_type, name):
    assert blip_core._model_class(model_type).__name__ == name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the device tool, when one is lent)")
@pytest.mark.parametrize("make", ["t5", "opt", "blip1"])
def test_on_cuda_each_kind_answers_in_fp16_from_the_gpu(make, tiny_model, tmp_path, photo):
    """What a real endpoint runs: fp16 weights on the GPU, and every tensor blip_core builds moved there too (on the
    CPU a tensor left behind changes nothing, so only this test can see it)."""
    source = {"t5": lambda: tiny_model, "opt": lambda: make_tiny_blip2_opt(tmp_path / "opt"), "blip1": lambda: make_tiny_blip(tmp_path / "b1")}[make]()
    loaded = blip_core.load_captioning_model(str(source))
    assert loaded.device.type == "cuda" and loaded.dtype == torch.float16
    assert {p.device.type for p in loaded.model.parameters()} == {"cuda"} and {p.dtype for p in loaded.model.parameters()} == {torch.float16}
    got = blip_core.caption_and_answer(loaded, photo, QUESTIONS, max_new_tokens=6)
    assert list(got.answers) == [q.name for q in QUESTIONS] and isinstance(got.caption, str)
