"""The documentation's examples run, and its reference tables match the code.

Every fenced block whose language is ``python`` in ``docs/*.md`` is executed. The blocks of one
page run in order in one fresh interpreter (a subprocess), so they share a namespace, and
Verifier worker processes cannot outlive the page. Blocks fenced with any other language
(``py`` for Python illustrations that are not meant to run, ``bash``, ``text``, ...) are skipped.
(An info string such as ``python no-run`` is not an option: the docs' Markdown extension would
not render it as a code block.)

Each block is placed at its own line numbers in the executed source, so a traceback's
``docs/<page>.md, line N`` points at the Markdown line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
PAGE_TIMEOUT_S = 240

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")

# Runs the page's source in a fresh namespace named __main__; the source comes on stdin so the
# child has no main file (Verifier workers are spawned and would otherwise re-run it).
_RUNNER = (
    "import sys\n"
    "name = sys.argv[1]\n"
    "source = sys.stdin.read()\n"
    "exec(compile(source, name, 'exec'), {'__name__': '__main__', '__file__': name})\n"
)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    language: str
    info: str
    first_line: int  # 1-based line of the block's first code line
    code: str


def code_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text (indented ones, e.g. in admonitions, too)."""
    blocks: list[Block] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opening = _OPEN.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        closing = re.compile(rf"^{re.escape(indent)}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        language = info.split()[0].lstrip(".{").rstrip("}") if info else ""
        blocks.append(Block(language, info, i + 2, textwrap.dedent("\n".join(body))))
        i = j + 1
    return blocks


def runnable(block: Block) -> bool:
    """Whether a block is an example to execute: its language is ``python``."""
    return block.language == "python"


def page_source(blocks: list[Block]) -> str:
    """The runnable blocks joined in order, each starting at its own Markdown line number."""
    out: list[str] = []
    for block in blocks:
        if not runnable(block):
            continue
        padding = block.first_line - 1 - len(out)
        out.extend([""] * max(0, padding))
        out.extend(block.code.split("\n"))
    return "\n".join(out) + "\n"


def _pages_with_examples() -> list[Path]:
    return [p for p in PAGES if any(runnable(b) for b in code_blocks(p.read_text("utf-8")))]


def test_docs_exist() -> None:
    names = {p.name for p in PAGES}
    assert {"index.md", "installation.md", "corpus.md", "tasks.md", "rewards.md",
            "environment.md"} <= names


def test_block_extraction() -> None:
    text = (
        "intro\n```python\nx = 1\n```\n\n```py\nnot_run()\n```\n"
        "!!! note\n    ```python\n    y = x + 1\n    ```\n"
        '```python title="example.py"\nz = y\n```\n```bash\nmake test\n```\n'
    )
    blocks = code_blocks(text)
    assert [b.language for b in blocks] == ["python", "py", "python", "python", "bash"]
    assert [runnable(b) for b in blocks] == [True, False, True, True, False]
    source = page_source(blocks)
    lines = source.split("\n")
    assert lines[2] == "x = 1" and lines[10] == "y = x + 1"
    exec(compile(source, "<docs>", "exec"), {})


@pytest.mark.parametrize("page", _pages_with_examples(), ids=lambda p: p.name)
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    source = page_source(code_blocks(page.read_text("utf-8")))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("MPLBACKEND", "Agg")
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, f"docs/{page.name}"],
        input=source, text=True, capture_output=True, cwd=tmp_path, env=env,
        timeout=PAGE_TIMEOUT_S, check=False,
    )
    assert proc.returncode == 0, (
        f"the examples of docs/{page.name} failed (exit {proc.returncode}):\n"
        f"{proc.stderr[-6000:]}\n--- stdout ---\n{proc.stdout[-2000:]}"
    )


# -- reference tables that must list exactly what the code defines ------------------------------


def _table_first_column(page: str, heading: str) -> set[str]:
    """The backticked names in the first column of the first table under ``heading``."""
    text = (DOCS / page).read_text("utf-8")
    start = text.index(heading)
    rows = []
    for line in text[start:].split("\n")[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    names = set()
    for row in rows[2:]:
        first = row.strip("|").split("|")[0]
        names.update(re.findall(r"`([^`]+)`", first))
    return names


def test_reason_codes_table_matches_code() -> None:
    from spice_env.tasks import REASONS

    assert _table_first_column("tasks.md", "### Reason codes") == set(REASONS)


def test_outcomes_table_matches_code() -> None:
    from spice_env.verify import OUTCOMES

    assert _table_first_column("tasks.md", "### Outcomes") == set(OUTCOMES)


def test_verifier_config_table_matches_code() -> None:
    from spice_env.verify import VerifierConfig

    assert _table_first_column("tasks.md", "### VerifierConfig") == set(
        VerifierConfig.model_fields)


def test_game_config_table_matches_code() -> None:
    from spice_env.game import GameConfig

    documented = _table_first_column("environment.md", "## Keyword arguments")
    assert set(GameConfig.model_fields) <= documented


def test_challenger_rewards_table_matches_code() -> None:
    # a fresh interpreter: other tests may register rewards in this one
    proc = subprocess.run(
        [sys.executable, "-c",
         "from spice_env.rewards import CHALLENGER_REWARDS; print(' '.join(CHALLENGER_REWARDS))"],
        text=True, capture_output=True, cwd=ROOT, timeout=120, check=True,
    )
    built_in = set(proc.stdout.split())
    assert _table_first_column("rewards.md", "## Built-in Challenger rewards") == built_in
