"""Two more tiny random captioners beside pipeline/testmodel.py's BLIP-2 (T5), written like real checkpoints so
they load through blip_core's own `from_pretrained` path: BLIP-1 (`Salesforce/blip-image-captioning-*`: a text
prefix is continued) and BLIP-2 with a decoder-only language model (`Salesforce/blip2-opt-*`: prompts are
left-padded and the answer follows the prompt). Their words are random, but deterministic."""

from __future__ import annotations

from pathlib import Path

from pipeline.testmodel import IMAGE_SIZE, NUM_QUERY_TOKENS, SENTENCES

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def _tokenizer(specials: list[str], template: str, **tokens: str):
    """A lower-casing word-level tokenizer over testmodel's sentences; `template` places the special tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator([*SENTENCES, "question answer : ?"], trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(token, specials.index(token)) for token in specials if token in template])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", **tokens)


def _image_processor():
    from transformers import BlipImageProcessor

    return BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def make_tiny_blip(directory: Path, seed: int = 0) -> Path:
    """BLIP-1 captioner: [CLS] prompt [SEP] in, [DEC] replaces [CLS] when decoding, [SEP] ends a caption."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor

    specials = ["[PAD]", "[SEP]", "<unk>", "[DEC]", "[CLS]"]
    tokenizer = _tokenizer(specials, "[CLS] $A [SEP]", pad_token="[PAD]", sep_token="[SEP]", bos_token="[DEC]", cls_token="[CLS]")
    config = BlipConfig(
        text_config=dict(SMALL, vocab_size=len(tokenizer), encoder_hidden_size=32, bos_token_id=3, sep_token_id=1, pad_token_id=0,
                         eos_token_id=1, initializer_range=0.5),
        vision_config=dict(SMALL, image_size=IMAGE_SIZE, patch_size=8, initializer_range=0.5),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(directory)
    BlipProcessor(image_processor=_image_processor(), tokenizer=tokenizer).save_pretrained(directory)
    return Path(directory)


def make_tiny_blip2_opt(directory: Path, seed: int = 0) -> Path:
    """BLIP-2 with an OPT (decoder-only) language model: </s> starts each prompt, as OPT's tokenizer does."""
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig, Blip2VisionConfig, OPTConfig

    specials = ["<pad>", "</s>", "<unk>"]
    tokenizer = _tokenizer(specials, "</s> $A", pad_token="<pad>", eos_token="</s>", bos_token="</s>")
    processor = Blip2Processor(image_processor=_image_processor(), tokenizer=tokenizer, num_query_tokens=NUM_QUERY_TOKENS)
    vision = Blip2VisionConfig(**SMALL, image_size=IMAGE_SIZE, patch_size=8, initializer_range=0.5)
    qformer = Blip2QFormerConfig(**SMALL, encoder_hidden_size=32, vocab_size=64, initializer_range=0.5)
    text = OPTConfig(vocab_size=len(tokenizer), hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
                     word_embed_proj_dim=32, pad_token_id=0, bos_token_id=1, eos_token_id=1, init_std=0.5, max_position_embeddings=128)
    config = Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                         num_query_tokens=NUM_QUERY_TOKENS, image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    Blip2ForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return Path(directory)
