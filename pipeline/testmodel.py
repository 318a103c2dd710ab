"""A tiny randomly-initialised BLIP-2 (T5 language model) written like a real checkpoint.

It loads through the same `from_pretrained` code path as `Salesforce/blip2-flan-t5-xl`, so tests
and offline demos exercise the real captioning code without downloading gigabytes. Its captions
are random words from a small vocabulary — deterministic, but meaningless.
"""

from __future__ import annotations

from pathlib import Path

NUM_QUERY_TOKENS = 4
IMAGE_SIZE = 32
SENTENCES = [
    "a photo of a black leather shoe on a white background",
    "a red cotton t-shirt with a striped pattern",
    "a blue denim jacket in a casual style",
    "a green ceramic mug with a floral pattern",
    "a brown wool sweater in a classic style",
    "question answer what colour material pattern style kind of product is this",
    "sneakers boots bag watch hat dress grey silver gold navy pink beige solid checked sporty vintage",
]


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    # T5's convention: pad=0, eos=1, unk=2.
    tokenizer.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def make_test_model(directory: Path, seed: int = 0) -> Path:
    """Write the tiny checkpoint (config, safetensors, tokenizer, processor) into `directory`."""
    import torch
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        T5Config,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=NUM_QUERY_TOKENS)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")

    vision = Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=8, initializer_range=0.5)
    qformer = Blip2QFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, encoder_hidden_size=32, vocab_size=64, initializer_range=0.5)
    text = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, initializer_factor=8.0,
    )
    config = Blip2Config(
        vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
        num_query_tokens=NUM_QUERY_TOKENS, image_token_index=image_token_id,
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
