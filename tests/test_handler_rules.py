"""The handler's request and answer rules as an endpoint caller meets them (issue 20, mutation testing).

Every request goes through the published serving stack as in tests/test_sagemaker_handler.py (MMS's loader,
the toolkit's handler service, our code/inference.py from package.py's archive, the tiny BLIP-2): what is
asserted is what a caller of the endpoint sees, the HTTP status and the body.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import shutil
import struct
import types

import pytest

from pipeline.attributes import load_attribute_schema
from pipeline.captioners.contract import build_request, endpoint_error, parse_response
from pipeline.errors import BadInputError, ServiceError
from support.images import jpeg_bytes, png_chunk
from support.model_server import ModelServer, unpacked_artifact

SCHEMA = load_attribute_schema()


def refusal(reply) -> str:
    """The sentence a refused request shows the person (the photo's fault, not retried)."""
    assert reply.status == 400, reply.body
    error = endpoint_error(reply.body, reply.status)
    assert isinstance(error, BadInputError), error
    return str(error)


@pytest.mark.parametrize("accept", ["application/json; charset=utf-8", "Application/JSON", "*/*; q=0.8", " application/json ;q=1"])
def test_an_accept_header_with_parameters_or_capitals_still_gets_the_json_answer(model_server, accept):
    reply = model_server.invoke(jpeg_bytes(), "image/jpeg", accept)
    assert reply.status == 200, reply.body
    assert set(json.loads(reply.body)) == {"caption", "answers", "model_id", "revision", "latency_ms"}


# model_fn runs when the worker loads the model: each test below starts its own worker (the session's model_server
# loads once, before any test that could check what it loaded).

NO_MODEL = "No model: package weights into the model data, or set BLIP2_MODEL_ID and a pinned BLIP2_MODEL_REVISION."


def test_packaged_weights_are_served_even_when_a_hub_model_is_configured(model_dir):
    # the Hub id is offline-unreachable here: loading it instead of the packaged weights fails every request
    server = ModelServer(model_dir, env={"BLIP2_MODEL_ID": "example/not-downloaded", "BLIP2_MODEL_REVISION": "1" * 40})
    reply = server.invoke(jpeg_bytes(), "image/jpeg")
    assert reply.status == 200, reply.body
    assert (reply.json()["model_id"], reply.json()["revision"]) == ("example/not-downloaded", "1" * 40)  # what was deployed


def test_packaged_weights_without_a_configured_id_report_the_model_directory(model_dir, monkeypatch):
    monkeypatch.delenv("BLIP2_MODEL_ID", raising=False)
    monkeypatch.delenv("BLIP2_MODEL_REVISION", raising=False)
    answer = ModelServer(model_dir).invoke(jpeg_bytes(), "image/jpeg").json()
    assert (answer["model_id"], answer["revision"]) == (str(model_dir), None)


@pytest.mark.parametrize("revision", ["", None])
def test_a_hub_model_without_a_pinned_revision_is_refused_at_load(tiny_model, tmp_path, monkeypatch, revision):
    """An unpinned Hub model would change under a running endpoint: no model loads, every request says why."""
    monkeypatch.delenv("BLIP2_MODEL_REVISION", raising=False)
    env = {"BLIP2_MODEL_ID": str(tiny_model)} | ({} if revision is None else {"BLIP2_MODEL_REVISION": revision})
    server = ModelServer(unpacked_artifact(tmp_path), env=env)
    for key, value in env.items():  # the toolkit loads again per request, with the same environment
        monkeypatch.setenv(key, value)
    reply = server.invoke(jpeg_bytes(), "image/jpeg")
    assert reply.status >= 400 and reply.json()["message"] == NO_MODEL
    assert isinstance(endpoint_error(reply.body, reply.status), ServiceError)


def test_no_model_id_and_no_weights_is_refused_with_the_instruction(tmp_path, monkeypatch):
    monkeypatch.delenv("BLIP2_MODEL_ID", raising=False)
    monkeypatch.setenv("BLIP2_MODEL_REVISION", "main")
    reply = ModelServer(unpacked_artifact(tmp_path)).invoke(jpeg_bytes(), "image/jpeg")
    assert reply.status >= 400 and reply.json()["message"] == NO_MODEL


EIGHT_BIT_LOADS = all(importlib.util.find_spec(name) for name in ("bitsandbytes", "accelerate"))


@pytest.mark.skipif(EIGHT_BIT_LOADS, reason="8-bit loading works here (bitsandbytes and accelerate installed)")
@pytest.mark.parametrize("value", ["True", "1", "yes"])
def test_load_in_8bit_is_honoured_in_any_letter_case(model_dir, monkeypatch, value):
    """Without bitsandbytes / accelerate (this machine) an 8-bit load fails: the failure shows the setting was read as on."""
    monkeypatch.setenv("LOAD_IN_8BIT", value)
    reply = ModelServer(model_dir).invoke(jpeg_bytes(), "image/jpeg")
    assert reply.status >= 400 and "Could not load the captioning model" in reply.json()["message"]


@pytest.mark.parametrize("value", ["false", "0", "no", ""])
def test_load_in_8bit_off_loads_the_full_model(model_dir, monkeypatch, value):
    monkeypatch.setenv("LOAD_IN_8BIT", value)
    assert ModelServer(model_dir).invoke(jpeg_bytes(), "image/jpeg").status == 200


def test_a_hub_model_is_loaded_at_its_pinned_revision(tiny_model, tmp_path, monkeypatch):
    """The Hub (here its local cache, offline) holds the model under the pinned commit only: no `main` ref."""
    import huggingface_hub.constants

    revision = "a" * 40
    shutil.copytree(tiny_model, tmp_path / "hub" / "models--tiny--blip2" / "snapshots" / revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    server = ModelServer(unpacked_artifact(tmp_path), env={"BLIP2_MODEL_ID": "tiny/blip2", "BLIP2_MODEL_REVISION": revision})
    reply = server.invoke(jpeg_bytes(), "image/jpeg")
    assert reply.status == 200, reply.body
    assert (reply.json()["model_id"], reply.json()["revision"]) == ("tiny/blip2", revision)


# Request size and content type (input_fn).


def test_a_request_of_exactly_the_size_limit_is_served_and_one_byte_more_is_refused(model_server, monkeypatch):
    photo = jpeg_bytes()
    monkeypatch.setattr(model_server.handler, "MAX_REQUEST_BYTES", len(photo))
    assert model_server.invoke(photo, "image/jpeg").status == 200
    monkeypatch.setattr(model_server.handler, "MAX_REQUEST_BYTES", len(photo) - 1)
    assert "The request is larger than 0 MB." in refusal(model_server.invoke(photo, "image/jpeg"))


def test_the_size_refusal_names_the_limit_in_whole_megabytes(model_server, monkeypatch):
    monkeypatch.setattr(model_server.handler, "MAX_REQUEST_BYTES", 2 * 1024 * 1024)
    body = b"x" * (2 * 1024 * 1024 + 1)
    assert refusal(model_server.invoke(body, "image/jpeg")) == "The captioning model refused this photo: The request is larger than 2 MB."


@pytest.mark.parametrize("content_type", ["IMAGE/JPEG", "image/jpeg; charset=binary", " image/jpeg "])
def test_an_image_content_type_in_capitals_or_with_parameters_is_read_as_an_image(model_server, content_type):
    assert model_server.invoke(jpeg_bytes(), content_type).status == 200


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_a_json_content_type_with_a_charset_is_read_as_json(model_server, content_type):
    body = json.dumps({"image": base64.b64encode(jpeg_bytes()).decode(), "max_new_tokens": 4}).encode()
    assert model_server.invoke(body, content_type).status == 200


@pytest.mark.parametrize("content_type", [None, "", "image/gif"])
def test_a_request_without_a_supported_content_type_is_refused_with_the_types_to_send(model_server, content_type):
    sentence = refusal(model_server.invoke(jpeg_bytes(), content_type))
    assert sentence.startswith("The captioning model refused this photo: Unsupported content type ")
    assert sentence.endswith("; send image/jpeg, image/png, application/x-image or application/json.")


def test_x_image_is_an_image_content_type(model_server):
    assert model_server.invoke(jpeg_bytes(), "application/x-image").status == 200


# The photo (decode_image).


def test_a_photo_of_exactly_the_pixel_limit_is_served_and_one_pixel_more_is_refused(model_server, monkeypatch):
    photo = jpeg_bytes(size=(1200, 1000))
    monkeypatch.setattr(model_server.handler, "MAX_PIXELS", 1_200_000)
    assert model_server.invoke(photo, "image/jpeg").status == 200
    monkeypatch.setattr(model_server.handler, "MAX_PIXELS", 1_199_999)
    assert refusal(model_server.invoke(photo, "image/jpeg")) == (
        "The captioning model refused this photo: The image is larger than 1 megapixels.")


def test_the_pixel_refusal_names_the_limit_in_whole_megapixels(model_server, monkeypatch):
    monkeypatch.setattr(model_server.handler, "MAX_PIXELS", 2_000_000)
    assert refusal(model_server.invoke(jpeg_bytes(size=(1500, 1500)), "image/jpeg")) == (
        "The captioning model refused this photo: The image is larger than 2 megapixels.")


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels (what a decompression bomb looks like before decoding)."""
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack("!IIBBBBB", width, height, 8, 2, 0, 0, 0)) + png_chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_before_it_is_decoded(model_server):
    assert refusal(model_server.invoke(png_header(40_000, 40_000), "image/png")) == (
        "The captioning model refused this photo: The image is too large to decode safely.")


def test_a_truncated_photo_is_refused_as_undecodable(model_server):
    photo = jpeg_bytes()
    assert refusal(model_server.invoke(photo[: len(photo) // 2], "image/jpeg")) == (
        "The captioning model refused this photo: The image could not be decoded.")


def test_a_greyscale_or_transparent_photo_is_captioned(model_server):
    from PIL import Image

    grey, rgba = io.BytesIO(), io.BytesIO()
    Image.new("L", (64, 64), 128).save(grey, "PNG")
    Image.new("RGBA", (64, 64), (10, 200, 10, 100)).save(rgba, "PNG")
    assert model_server.invoke(grey.getvalue(), "image/png").status == 200
    assert model_server.invoke(rgba.getvalue(), "image/png").status == 200


# The answer (predict_fn).


def test_latency_is_the_model_time_in_milliseconds_to_a_tenth(model_server, monkeypatch):
    clock = iter([1000.0, 1000.0234375])  # an injected clock: the model took 23.4375 ms
    monkeypatch.setattr(model_server.handler, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    assert model_server.invoke(jpeg_bytes(), "image/jpeg").json()["latency_ms"] == 23.4


def test_the_caption_prompt_and_token_budget_reach_the_model(model_server, tiny_model):
    from pipeline.captioners.local import LocalCaptioner
    from pipeline.images.normalize import normalize_image

    image = normalize_image(jpeg_bytes(color=(30, 60, 200), seed=3))
    prompted = LocalCaptioner(str(tiny_model), max_new_tokens=5, caption_prompt="a close-up photo of")
    local, _ = prompted.caption(image, SCHEMA.attributes)
    body = build_request(image.jpeg, SCHEMA.attributes, caption_prompt="a close-up photo of", max_new_tokens=5)
    remote = parse_response(model_server.invoke(body, "application/json").body)
    assert (remote["caption"], remote["answers"]) == (local.caption, local.answers)
    plain = parse_response(model_server.invoke(build_request(image.jpeg, SCHEMA.attributes, max_new_tokens=5), "application/json").body)
    assert plain["caption"] != remote["caption"]  # the prompt changes the caption: the comparison above means something


def test_a_json_request_with_only_an_image_gets_the_default_questions(model_server):
    body = json.dumps({"image": base64.b64encode(jpeg_bytes()).decode()}).encode()
    reply = model_server.invoke(body, "application/json")
    assert reply.status == 200, reply.body
    assert set(reply.json()["answers"]) == {"category", "color", "material", "pattern", "style"}


# The JSON contract (parse_json_request, parse_questions, bounded_text, json_depth).


def image_request(**fields) -> bytes:
    return json.dumps({"image": base64.b64encode(jpeg_bytes()).decode(), **fields}).encode()


@pytest.mark.parametrize("tokens", [1, 64])
def test_the_token_budget_limits_are_inclusive(model_server, tokens):
    assert model_server.invoke(image_request(max_new_tokens=tokens), "application/json").status == 200


@pytest.mark.parametrize("tokens", [True, 2.5, None])
def test_a_token_budget_that_is_not_a_whole_number_is_refused(model_server, tokens):
    assert refusal(model_server.invoke(image_request(max_new_tokens=tokens), "application/json")) == (
        'The captioning model refused this photo: "max_new_tokens" must be a whole number from 1 to 64.')


@pytest.mark.parametrize("body", [b"[]", b'"image"', json.dumps({"image": 5}).encode(), json.dumps({"image": None}).encode()])
def test_a_json_body_without_an_image_string_is_refused(model_server, body):
    assert refusal(model_server.invoke(body, "application/json")) == (
        'The captioning model refused this photo: The JSON request needs "image": a base64-encoded JPEG or PNG.')


def test_an_image_that_is_not_base64_is_refused_with_the_field_name(model_server):
    assert refusal(model_server.invoke(json.dumps({"image": "abc$"}).encode(), "application/json")) == (
        'The captioning model refused this photo: "image" is not valid base64.')


def test_the_answers_follow_the_questions_sent(model_server):
    questions = [{"name": "finish", "question": "Is it shiny?"}, {"name": "shape", "question": "What shape is it?", "prefix": "it is"}]
    reply = model_server.invoke(image_request(questions=questions, max_new_tokens=3), "application/json")
    assert reply.status == 200, reply.body
    assert list(reply.json()["answers"]) == ["finish", "shape"]


def test_sixteen_questions_are_answered(model_server):
    questions = [{"name": f"q{i}", "question": "What colour is it?"} for i in range(16)]
    reply = model_server.invoke(image_request(questions=questions, max_new_tokens=2), "application/json")
    assert reply.status == 200 and len(reply.json()["answers"]) == 16


def test_seventeen_questions_are_refused_with_the_count(model_server):
    questions = [{"name": f"q{i}", "question": "What colour is it?"} for i in range(17)]
    assert refusal(model_server.invoke(image_request(questions=questions), "application/json")) == (
        "The captioning model refused this photo: At most 16 questions per request (17 sent).")


QUESTIONS_SHAPE = 'The captioning model refused this photo: "questions" must be a list of {"name", "question", "prefix"} objects.'


@pytest.mark.parametrize("questions", [
    {"name": "c", "question": "Colour?"},  # one object, not a list
    [{"name": "c"}],  # no question
    [{"question": "Colour?"}],  # no name
    ["Colour?"],
])
def test_questions_of_the_wrong_shape_are_refused(model_server, questions):
    assert refusal(model_server.invoke(image_request(questions=questions), "application/json")) == QUESTIONS_SHAPE


@pytest.mark.parametrize("field, question", [
    ("name", {"name": 5, "question": "Colour?"}),
    ("question", {"name": "c", "question": ["Colour?"]}),
    ("prefix", {"name": "c", "question": "Colour?", "prefix": None}),
])
def test_question_fields_that_are_not_text_are_refused_by_name(model_server, field, question):
    assert refusal(model_server.invoke(image_request(questions=[question]), "application/json")) == (
        f'The captioning model refused this photo: "{field}" must be text.')


@pytest.mark.parametrize("field, question", [
    ("name", {"name": "n" * 301, "question": "Colour?"}),
    ("prefix", {"name": "c", "question": "Colour?", "prefix": "p" * 301}),
])
def test_question_fields_over_300_characters_are_refused_by_name(model_server, field, question):
    assert refusal(model_server.invoke(image_request(questions=[question]), "application/json")) == (
        f'The captioning model refused this photo: "{field}" is longer than 300 characters.')


def test_texts_of_exactly_300_characters_are_accepted(model_server):
    question = {"name": "n" * 300, "question": "q" * 300, "prefix": "p" * 300}
    reply = model_server.invoke(image_request(questions=[question], caption_prompt="c" * 300, max_new_tokens=1), "application/json")
    assert reply.status == 200, reply.body


def test_a_caption_prompt_that_is_not_text_is_refused(model_server):
    assert refusal(model_server.invoke(image_request(caption_prompt=["a photo"]), "application/json")) == (
        'The captioning model refused this photo: "caption_prompt" must be text.')


def test_four_levels_of_nesting_are_accepted_and_five_refused(model_server):
    four = image_request(max_new_tokens=1, extra=[[{"a": 1}]])  # { [ [ {
    assert model_server.invoke(four, "application/json").status == 200
    five = image_request(extra=[[[{"a": 1}]]])
    assert refusal(model_server.invoke(five, "application/json")) == (
        "The captioning model refused this photo: The JSON request is nested more than 4 levels deep.")


def test_nesting_is_counted_after_closed_siblings_too(model_server):
    body = image_request(a=[], b=[], c=[], d=[[[{"x": 1}]]])  # five deep after three closed lists
    assert "nested more than 4 levels" in refusal(model_server.invoke(body, "application/json"))


def test_brackets_inside_text_are_not_nesting(model_server):
    body = image_request(caption_prompt='[[[[[{{{{ "quoted" ]]]', max_new_tokens=1)
    assert model_server.invoke(body, "application/json").status == 200


@pytest.mark.parametrize("body", [b"{not json", b'{"image": "abc"'])
def test_a_body_that_is_not_json_is_refused_in_one_sentence(model_server, body):
    assert refusal(model_server.invoke(body, "application/json")) == (
        "The captioning model refused this photo: The request body is not valid JSON.")


def test_a_json_request_without_a_caption_prompt_is_captioned_without_one(model_server, tiny_model):
    from pipeline.captioners.local import LocalCaptioner
    from pipeline.images.normalize import normalize_image

    image = normalize_image(jpeg_bytes(color=(120, 40, 160), seed=9))
    local, _ = LocalCaptioner(str(tiny_model), max_new_tokens=5).caption(image, SCHEMA.attributes)
    request = json.loads(build_request(image.jpeg, SCHEMA.attributes, max_new_tokens=5))
    del request["caption_prompt"]
    remote = parse_response(model_server.invoke(json.dumps(request).encode(), "application/json").body)
    assert remote["caption"] == local.caption


def test_an_empty_photo_is_refused_in_one_sentence(model_server):
    assert refusal(model_server.invoke(b"", "image/png")) == "The captioning model refused this photo: The image is empty."


@pytest.fixture(scope="module")
def blip1_endpoint(tmp_path_factory):
    """The handler serving a BLIP-1 captioner (packaged weights), whose answers continue each question's prefix."""
    from support.tiny_models import make_tiny_blip

    weights = make_tiny_blip(tmp_path_factory.mktemp("tiny-blip1"))
    return ModelServer(unpacked_artifact(tmp_path_factory.mktemp("blip1-artifact"), weights)), weights


def test_a_blip1_endpoint_continues_each_prefix_sent_and_no_prefix_when_none_is(blip1_endpoint):
    """A question sent without "prefix" is continued from nothing, like the caption: the mutant that defaulted the
    prefix to other text survived every BLIP-2 test (BLIP-2 reads the question, not the prefix)."""
    from PIL import Image

    from pipeline import blip_core

    server, weights = blip1_endpoint
    questions = [{"name": "plain", "question": "What is it?"}, {"name": "kind", "question": "What kind?", "prefix": "a photo of a"}]
    reply = server.invoke(image_request(questions=questions, max_new_tokens=4), "application/json")
    assert reply.status == 200, reply.body
    loaded = blip_core.load_captioning_model(str(weights))
    own = blip_core.caption_and_answer(loaded, Image.open(io.BytesIO(jpeg_bytes())), [
        blip_core.Question("plain", "What is it?", ""), blip_core.Question("kind", "What kind?", "a photo of a")], max_new_tokens=4)
    assert (reply.json()["caption"], reply.json()["answers"]) == (own.caption, own.answers)
    assert own.answers["plain"] == own.caption and own.answers["kind"] != own.caption  # the prefix is what differs
