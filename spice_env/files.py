"""Finding corpus files under a folder without opening anything but plain files, and reading them
within byte limits.

:func:`find_files` walks a folder without following links to folders; it keeps regular files with
a supported suffix and links to such files inside the folder (each file once), and reports every
other entry as :class:`Skipped`: FIFOs, sockets and device files (never opened), broken or looping
links, links leading outside the folder, and files with other suffixes. :func:`bounded_lines` and
:func:`read_bounded` read with a byte cap, so that one huge line or file costs bounded memory.
"""

from __future__ import annotations

import codecs
import os
import stat
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

DEFAULT_MAX_FILE_BYTES = 1 << 30
"""Files larger than this (1 GiB) are skipped: corpus shards are split far below it, and a file is
held in memory while it is read."""
DEFAULT_MAX_RECORD_BYTES = 8 << 20
"""Records larger than this (8 MiB, about two million tokens) are skipped: a JSON Lines or CSV line,
or a whole plain-text file."""
_DISCARD_CHUNK = 1 << 20

SkipKind = Literal["special", "link", "unknown", "unreadable"]
"""Why a folder entry is not read: not a regular file, a link that cannot or should not be read, an
unsupported suffix, or an error while listing or inspecting it."""


@dataclass(frozen=True)
class ReadLimits:
    """Byte caps on what reading one file may cost.

    Attributes:
        max_file_bytes: a file larger than this is skipped before it is opened (None: no cap).
        max_record_bytes: a record larger than this is skipped (None: no cap). A JSON Lines or
            CSV line is read at most this far, the rest of an overlong line is dropped in chunks;
            a plain-text file is one record.
    """

    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES
    max_record_bytes: int | None = DEFAULT_MAX_RECORD_BYTES

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_record_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")


DEFAULT_LIMITS = ReadLimits()
"""The default caps (:data:`DEFAULT_MAX_FILE_BYTES`, :data:`DEFAULT_MAX_RECORD_BYTES`)."""


@dataclass(frozen=True)
class Skipped:
    """A folder entry that is not read.

    Attributes:
        path: the entry.
        kind: why, in one word (see :data:`SkipKind`).
        reason: why, in words.
    """

    path: Path
    kind: SkipKind
    reason: str


class UnusablePathError(ValueError):
    """A corpus path that is missing, not a file or folder, or of an unsupported type."""


def corpus_files(path: Path, suffixes: Collection[str]) -> tuple[list[Path], list[Skipped]]:
    """The files to read for a corpus path (itself, or what :func:`find_files` keeps under a
    folder) and the folder entries left out; nothing is opened.

    Raises:
        UnusablePathError: a missing path, a FIFO, socket or device file, a file without one of
            ``suffixes``, or a folder without such a file.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        link = " (a broken link)" if path.is_symlink() else ""
        raise UnusablePathError(f"corpus path does not exist: {path}{link}") from None
    except OSError as exc:  # a looping link, a folder that cannot be searched
        raise UnusablePathError(f"corpus path {path} cannot be used: {exc.strerror or exc}"
                                ) from None
    except ValueError:  # a NUL character, or text no file name can hold (a lone surrogate)
        raise UnusablePathError(f"corpus path {str(path)!r} cannot be a file name (it holds a "
                                "NUL character or a lone surrogate)") from None
    if stat.S_ISDIR(info.st_mode):
        files, skipped = find_files(path, suffixes)
        if not files:
            others = f" ({len(skipped)} other entries skipped)" if skipped else ""
            raise UnusablePathError(
                f"corpus directory {path} holds no {', '.join(suffixes)} file{others}")
        return files, skipped
    special = describe_special(info.st_mode)
    if special is not None:
        raise UnusablePathError(f"corpus path {path} is {special}, not a file or folder; "
                                "it is not opened")
    if path.suffix not in suffixes:
        raise UnusablePathError(f"unsupported corpus file type {path.suffix!r} ({path}); "
                                f"supported: {', '.join(suffixes)}")
    return [path], []


def describe_special(mode: int) -> str | None:
    """What a file of this ``st_mode`` is when it is neither a regular file nor a folder (say,
    ``"a FIFO (named pipe)"``); None for a regular file or a folder."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISLNK(mode):
        return "a link"
    return "not a regular file"


def find_files(root: Path, suffixes: Collection[str]) -> tuple[list[Path], list[Skipped]]:
    """The files under ``root`` to read, in sorted order, and the entries left out.

    Only regular files are kept, each once (a hard link or a link to a file already kept is left
    out); a link is kept when it leads to a regular file inside ``root``. Nothing is opened.
    """
    found: list[tuple[Path, os.stat_result]] = []
    links: list[Path] = []
    skipped: list[Skipped] = []

    def unlisted(error: OSError) -> None:
        where = Path(error.filename) if error.filename else root
        skipped.append(Skipped(where, "unreadable", f"cannot be listed ({error.strerror})"))

    for folder, folders, names in os.walk(root, onerror=unlisted):
        here = Path(folder)
        skipped.extend(Skipped(here / name, "link", "a link to a folder, not followed")
                       for name in folders if (here / name).is_symlink())
        for name in names:
            path = here / name
            try:
                info = path.lstat()
            except OSError as exc:
                skipped.append(Skipped(path, "unreadable", f"cannot be inspected ({exc.strerror})"))
                continue
            special = describe_special(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                links.append(path)
            elif special is not None:
                skipped.append(Skipped(path, "special", f"{special}, not opened"))
            elif path.suffix not in suffixes:
                skipped.append(Skipped(path, "unknown", f"unsupported suffix {path.suffix!r}"))
            else:
                found.append((path, info))
    keep: list[Path] = []
    seen: dict[tuple[int, int], Path] = {}
    for path, info in sorted(found, key=lambda item: item[0]):
        first = seen.setdefault((info.st_dev, info.st_ino), path)
        if first != path:
            skipped.append(Skipped(path, "link", f"the same file as {first}, read once"))
        else:
            keep.append(path)
    base = root.resolve()
    for link in sorted(links):
        problem = _link_problem(link, base, suffixes, seen)
        if problem is None:
            keep.append(link)
        else:
            skipped.append(problem)
    return sorted(keep), sorted(skipped, key=lambda entry: entry.path)


def _link_problem(link: Path, base: Path, suffixes: Collection[str],
                  seen: dict[tuple[int, int], Path]) -> Skipped | None:
    """Why ``link`` is not read (None: it leads to a new regular file inside ``base``, now in
    ``seen``)."""
    try:
        target = link.resolve(strict=True)
        info = target.stat()
    except (OSError, RuntimeError):  # RuntimeError: a loop, on Python < 3.13
        return Skipped(link, "link", "a broken or looping link")
    if not target.is_relative_to(base):
        return Skipped(link, "link", f"a link to {target}, outside the folder")
    special = describe_special(info.st_mode)
    if special is not None:
        return Skipped(link, "special", f"a link to {special}, not opened")
    if link.suffix not in suffixes:
        return Skipped(link, "unknown", f"unsupported suffix {link.suffix!r}")
    first = seen.setdefault((info.st_dev, info.st_ino), link)
    if first != link:
        return Skipped(link, "link", f"a link to the same file as {first}, read once")
    return None


def bounded_lines(handle: BinaryIO, limit: int | None) -> Iterator[bytes | None]:
    """Each line of ``handle`` with its line ending, or None for a line longer than ``limit``
    bytes (line ending not counted): at most ``limit`` bytes of it are held, the rest is read in
    chunks and dropped, and the next line follows as usual. ``limit=None``: no cap."""
    if limit is None:
        yield from handle
        return
    while line := handle.readline(limit + 2):
        if len(line) == limit + 2 and not line.endswith(b"\n"):
            while (rest := handle.readline(_DISCARD_CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield None
        elif len(line.rstrip(b"\r\n")) > limit:
            yield None
        else:
            yield line


def numbered_lines(handle: BinaryIO, limit: int | None) -> Iterator[tuple[int, str | None]]:
    """The numbered lines of a UTF-8 file opened in binary mode (a byte order mark dropped,
    undecodable bytes replaced), None for a line over ``limit`` bytes (see
    :func:`bounded_lines`)."""
    for lineno, line in enumerate(bounded_lines(handle, limit), start=1):
        if line is not None and lineno == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        yield lineno, None if line is None else line.decode("utf-8", errors="replace")


def read_bounded(path: Path, limit: int | None) -> bytes | None:
    """The bytes of ``path``, or None when it holds more than ``limit`` bytes (at most
    ``limit + 1`` bytes are read). ``limit=None``: no cap."""
    with path.open("rb") as handle:
        data = handle.read() if limit is None else handle.read(limit + 1)
    return None if limit is not None and len(data) > limit else data
