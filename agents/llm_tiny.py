"""A tiny randomly initialised causal language model, built offline (docs/design.md section 12).

For tests, examples and benchmarks without a download: a GPT-2 of 2 layers, width 32, 2 heads, over a
byte-level vocabulary of 256 byte tokens plus ``<|endoftext|>`` (a `tokenizers` BPE without merges,
so every text encodes and decodes exactly), wrapped in transformers' PreTrainedTokenizerFast. Its
weights are drawn from a seeded generator (torch's global stream is left as it was). It generates
gibberish: most of its replies are invalid, which is what exercises the agents' fallback.

    model, tokenizer = build_tiny_model(seed=0)
    save_tiny_model("/tmp/tiny")          # a folder from_pretrained(..., local_files_only=True) reads
"""
from __future__ import annotations

END_OF_TEXT = "<|endoftext|>"
CONTEXT = 4096  # positions: a prompt of a few peers is ~1,500 byte tokens


def build_tokenizer():
    """A byte-level PreTrainedTokenizerFast: ids 0..255 are bytes, 256 is <|endoftext|> (eos and pad)."""
    from agents.llm_backends import require_transformers

    require_transformers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # the 256 printable stand-ins of the bytes
    vocabulary = {symbol: index for index, symbol in enumerate(alphabet)}
    core = Tokenizer(models.BPE(vocab=vocabulary, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([END_OF_TEXT])
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT,
                                   bos_token=END_OF_TEXT, model_max_length=CONTEXT)


def build_tiny_model(seed: int = 0, layers: int = 2, width: int = 32):
    """(model, tokenizer): the tiny GPT-2 with weights drawn from ``seed``, in eval mode."""
    import torch

    from agents.llm_backends import require_transformers

    require_transformers()
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer()
    eos = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=width, n_layer=layers, n_head=2,
                        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
                        initializer_range=0.5)  # wide weights: replies vary with the prompt (0.02 repeats one byte)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = eos
    return model.eval(), tokenizer


def save_tiny_model(path: str, seed: int = 0) -> str:
    """Write the tiny model and its tokenizer to the folder ``path``; returns it."""
    model, tokenizer = build_tiny_model(seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
