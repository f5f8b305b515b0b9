"""What every benchmark report carries and how it is written.

:func:`envelope` is the part every report shares: the command that made it, the date, the
machine (CPU, cores, RAM, load) and the package versions; :func:`write_report` writes a report
as JSON with its Markdown (and a PNG, when the benchmark draws one) beside it. Every benchmark
and every ``spice`` command that writes a report goes through both.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, OS and the load average (other processes share the machine)."""
    return {"cpu_model": _cpu_model(), "cores": os.cpu_count(), "ram_gib": _ram_gib(),
            "platform": platform.platform(), "load_avg_1_5_15": [round(x, 2)
                                                                for x in os.getloadavg()]}


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """Versions of Python and of the named distributions."""
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def source_files(files: Sequence[str]) -> dict[str, Any]:
    """The commit, short hashes of the measured source files, and whether they had local edits."""
    found: dict[str, Any] = {}
    for name in files:
        path = Path(name)
        found[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else None
    try:
        found["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                         text=True, check=True).stdout.strip()
        found["local_edits"] = bool(subprocess.run(["git", "status", "--porcelain", *files],
                                                   capture_output=True, text=True,
                                                   check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        found["commit"] = None
    return found


def command_line() -> str:
    """The command that ran the benchmark, with the script path relative to the cwd."""
    script = Path(sys.argv[0])
    if script.is_absolute() and script.is_relative_to(Path.cwd()):
        script = script.relative_to(Path.cwd())
    return " ".join(["python", script.as_posix(), *sys.argv[1:]])


def envelope(command: str, packages: Sequence[str], *, started: datetime | None = None
             ) -> dict[str, Any]:
    """The fields every report starts with: ``command``, ``date`` (ISO, UTC; ``started`` or
    now), ``machine`` and ``versions`` (Python and ``packages``)."""
    when = started or datetime.now(UTC)
    return {"command": command, "date": when.isoformat(timespec="seconds"),
            "machine": machine(), "versions": package_versions(packages)}


def write_report(report: Mapping[str, Any], output: Path,
                 markdown: Callable[[Any], str] | None = None,
                 plot: Callable[[Any, Path], Any] | None = None) -> list[Path]:
    """Write ``report`` as JSON to ``output``, its Markdown to ``output`` with ``.md`` and its
    picture to ``.png`` (each when its function is given); the paths written."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")
    written = [output]
    if markdown is not None:
        written.append(output.with_suffix(".md"))
        written[-1].write_text(markdown(report), "utf-8")
    if plot is not None:
        written.append(output.with_suffix(".png"))
        plot(report, written[-1])
    return written
