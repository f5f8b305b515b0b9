"""``spice export``: a run's policy as a transformers folder with a model card, optionally
pushed to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from spice_cli.common import UsageError, one_line, remote_code_warning, require_ours

_REPO_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+$")


def cmd_export(args: argparse.Namespace) -> int:
    """spice export: write the policy of a run (or a checkpoint) with its model card."""
    require_ours("algorithms")
    from algorithms.config import ConfigError
    from algorithms.model_card import export_run, push_to_hub

    if args.push_to_hub is not None and not _REPO_ID.fullmatch(args.push_to_hub):
        raise UsageError(f"--push-to-hub {args.push_to_hub!r} is not a repository id "
                         "(name or owner/name)")
    remote_code_warning(args.trust_remote_code, str(args.run))
    try:
        folder = export_run(args.run, args.folder, overwrite=args.overwrite,
                            trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError, ConfigError) as exc:
        raise UsageError(one_line(exc)) from None
    print(f"wrote {folder} (model, tokenizer, README.md model card, spice_config.yaml)")
    if args.push_to_hub is None:
        return 0
    try:
        address = push_to_hub(folder, args.push_to_hub, private=args.private)
    except Exception as exc:  # the hub's errors (auth, network, a name taken): one line
        print(f"error: pushing to {args.push_to_hub} failed: {one_line(exc)} (the export is "
              f"kept in {folder})", file=sys.stderr)
        return 2
    print(f"pushed to {address}")
    return 0


def add_export_command(command: Any) -> None:
    """Register ``spice export`` (``command(name, help)`` makes a sub-parser)."""
    export: argparse.ArgumentParser = command(
        "export", "write a run's policy as a transformers folder with a model card "
        "(optionally pushed to the Hugging Face Hub)")
    export.add_argument("run", type=Path,
                        help="a run folder (its model/, else its newest checkpoint) or a "
                        "checkpoint (.ckpt or checkpoints/last)")
    export.add_argument("folder", type=Path, help="the folder to write")
    export.add_argument("--push-to-hub", default=None, metavar="REPO",
                        help="also upload the folder to this Hub repository (owner/name)")
    export.add_argument("--private", action="store_true", help="create the repository private")
    export.add_argument("--overwrite", action="store_true",
                        help="replace a folder that is not empty")
    export.add_argument("--trust-remote-code", action="store_true",
                        help="let the base model's own Python code run (models you trust)")
    export.set_defaults(func=cmd_export)
