"""Tiny randomly initialised models built in code, for fast tests of the machinery.

``tiny_model()`` returns a two-layer Qwen2-architecture causal LM and a byte-level BPE tokenizer
trained on a few sentences, with a ChatML chat template. Its outputs are random text, so it is
for testing generation, log-probabilities, weight updates and training loops, not for learning.
Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_TRAINING_TEXT = [
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "<question>What is 12 + 30?</question><answer>42</answer><answer_type>integer</answer_type>",
    "A) 80 km/h B) 90 km/h C) 100 km/h D) 120 km/h. The answer is \\boxed{B}.",
    "The quick brown fox jumps over the lazy dog while 0123456789 digits count.",
    '{"question": "How many?", "answer": "7", "answer_type": "integer"}',
]


def tiny_tokenizer(vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(_TRAINING_TEXT * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_model(seed: int = 0, *, layers: int = 2, hidden: int = 64, dtype: Any = None
               ) -> tuple[Any, Any]:
    """A tiny random Qwen2 causal LM and its tokenizer (``(model, tokenizer)``)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=4096, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    if dtype is not None:
        from agents.models import cast_parameters

        cast_parameters(model, dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def save_tiny_model(folder: str | Path, seed: int = 0, **options: Any) -> Path:
    """Save a tiny model as a transformers folder (loadable by transformers and vLLM).

    ``options`` go to :func:`tiny_model` (``layers``, ``hidden``).
    """
    model, tokenizer = tiny_model(seed, **options)
    path = Path(folder)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
