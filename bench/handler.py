"""Handler benchmark: caption + 4 attribute answers per image, one batched generate (vision once)
vs one generate per prompt, on the tiny BLIP-2 (CPU here; CUDA fp16 when run on a GPU machine)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image


def bench_batched_vs_per_prompt(images: list[Image.Image], repeats: int = 3, device: str | None = None) -> dict:
    import torch

    from pipeline import blip_core
    from pipeline.testmodel import make_test_model

    with tempfile.TemporaryDirectory() as tmp:
        loaded = blip_core.load_captioning_model(str(make_test_model(Path(tmp) / "tiny")), device=device)
    questions = [
        blip_core.Question("category", "What kind of product is this?"),
        blip_core.Question("color", "What is the main colour of the product?"),
        blip_core.Question("material", "What material is the product made of?"),
        blip_core.Question("pattern", "What pattern does the product have?"),
    ]
    prompts = blip_core.blip2_prompts("", questions)

    def batched() -> None:
        for image in images:
            blip_core.caption_and_answer(loaded, image, questions, max_new_tokens=20)

    @torch.inference_mode()
    def per_prompt() -> None:
        for image in images:
            for prompt in prompts:
                inputs = loaded.processor(images=image, text=prompt, return_tensors="pt").to(loaded.device)
                inputs["pixel_values"] = inputs["pixel_values"].to(loaded.dtype)
                loaded.model.generate(**inputs, max_new_tokens=20, do_sample=False)

    def timed(fn) -> float:
        fn()  # warm-up
        runs = []
        for _ in range(repeats):
            if loaded.device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            fn()
            if loaded.device.type == "cuda":
                torch.cuda.synchronize()
            runs.append(time.perf_counter() - started)
        return statistics.median(runs)

    one_call = timed(batched)
    separate = timed(per_prompt)
    return {
        "device": f"{loaded.device.type} {str(loaded.dtype).replace('torch.', '')}",
        "images": len(images),
        "prompts_per_image": len(prompts),
        "batched_ms_per_image": round(one_call / len(images) * 1000, 1),
        "per_prompt_ms_per_image": round(separate / len(images) * 1000, 1),
        "speedup": round(separate / one_call, 2),
    }


def archive_sizes() -> dict:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("sm_package", Path(__file__).resolve().parent.parent / "sagemaker" / "package.py")
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)
    from pipeline.testmodel import make_test_model

    with tempfile.TemporaryDirectory() as tmp:
        code_only = package.build_archive(Path(tmp) / "code")
        with_tiny = package.build_archive(Path(tmp) / "tiny", make_test_model(Path(tmp) / "tiny-model"))
        return {"code_only_kb": round(code_only.stat().st_size / 1024, 1), "with_tiny_weights_kb": round(with_tiny.stat().st_size / 1024, 1)}
