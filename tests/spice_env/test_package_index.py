"""Fetching files from a package index: a small index served on loopback, and pip's settings."""

from __future__ import annotations

import hashlib
import http.server
import json
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

from spice_env import assets, package_index
from spice_env.package_index import IndexSettings, PackageIndexError, download

GOOD = b"the good archive\n" * 1000
TAMPERED = b"bytes that do not match the listing\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Index(http.server.BaseHTTPRequestHandler):
    """A PEP 691 JSON index (HTML for ``/html/``) with a good, a tampered and a mislisted file."""

    files: ClassVar[dict[str, bytes]] = {"good-1.0.tar.gz": GOOD, "tampered-1.0.tar.gz": TAMPERED}
    listings: ClassVar[dict[str, list[dict[str, object]]]] = {
        "good": [{"filename": "good-1.0.tar.gz", "url": "../../files/good-1.0.tar.gz",
                  "hashes": {"sha256": _sha(GOOD)}, "size": len(GOOD)}],
        # the index promises the good bytes' hash and serves other bytes
        "tampered": [{"filename": "tampered-1.0.tar.gz", "url": "/files/tampered-1.0.tar.gz",
                      "hashes": {"sha256": _sha(GOOD)}}],
        "mislisted": [{"filename": "mislisted-1.0.tar.gz", "url": "/files/good-1.0.tar.gz",
                       "hashes": {"sha256": "0" * 64}}],
        "malformed": [{"name": "no filename, no url"}],
    }
    seen_auth: ClassVar[list[str | None]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.seen_auth.append(self.headers.get("Authorization"))
        parts = [p for p in self.path.split("/") if p]
        if len(parts) == 2 and parts[0] == "files" and parts[1] in self.files:
            return self._send(200, "application/octet-stream", self.files[parts[1]])
        if len(parts) == 2 and parts[0] in ("simple", "html") and parts[1] in self.listings:
            rows = self.listings[parts[1]]
            if parts[0] == "simple":
                body = json.dumps({"meta": {"api-version": "1.1"}, "name": parts[1],
                                   "files": rows}).encode()
                return self._send(200, "application/vnd.pypi.simple.v1+json", body)
            links = "".join(f'<a href="{r["url"]}#sha256={r["hashes"]["sha256"]}">'  # type: ignore[index]
                            f'{r["filename"]}</a>\n' for r in rows)
            return self._send(200, "text/html", f"<html><body>{links}</body></html>".encode())
        self._send(404, "text/plain", b"not found")

    def _send(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def index_url(serve: Callable[[type[http.server.BaseHTTPRequestHandler]], str]) -> str:
    return serve(_Index)


def _settings(*urls: str) -> IndexSettings:
    return IndexSettings(indexes=urls, timeout=10, retries=1)


def test_a_good_file_is_downloaded_and_verified(index_url: str, tmp_path: Path) -> None:
    target = tmp_path / "good-1.0.tar.gz"
    got = download("good", "good-1.0.tar.gz", _sha(GOOD), target, _settings(f"{index_url}/simple/"))
    assert got == target and target.read_bytes() == GOOD
    assert list(tmp_path.iterdir()) == [target]  # no partial file left


def test_html_index_pages_work_too(index_url: str, tmp_path: Path) -> None:
    target = tmp_path / "good.tar.gz"
    download("Good", "good-1.0.tar.gz", _sha(GOOD), target, _settings(f"{index_url}/html/"))
    assert target.read_bytes() == GOOD


def test_bytes_that_do_not_match_are_refused(index_url: str, tmp_path: Path) -> None:
    target = tmp_path / "tampered-1.0.tar.gz"
    with pytest.raises(PackageIndexError, match=r"has sha256 .* expected .*refusing it"):
        download("tampered", "tampered-1.0.tar.gz", _sha(GOOD), target,
                 _settings(f"{index_url}/simple/"))
    assert list(tmp_path.iterdir()) == []


def test_an_index_hash_that_differs_from_the_pin_is_refused_before_downloading(
        index_url: str, tmp_path: Path) -> None:
    with pytest.raises(PackageIndexError, match=r"the index lists sha256 0+ .*refusing it"):
        download("mislisted", "mislisted-1.0.tar.gz", _sha(GOOD), tmp_path / "m",
                 _settings(f"{index_url}/simple/"))
    assert list(tmp_path.iterdir()) == []


def test_a_missing_project_or_file_names_every_index_asked(index_url: str,
                                                           tmp_path: Path) -> None:
    settings = _settings(f"{index_url}/simple/", f"{index_url}/html/")
    with pytest.raises(PackageIndexError) as missing:
        download("absent", "absent-1.0.tar.gz", "0" * 64, tmp_path / "a", settings)
    message = str(missing.value)
    assert message.count("no such project") == 2 and "SPICE_ENV_INDEX_URL" in message
    with pytest.raises(PackageIndexError, match=r"good has no file good-2\.0\.tar\.gz"):
        download("good", "good-2.0.tar.gz", "0" * 64, tmp_path / "b", settings)


def test_a_malformed_index_page_is_a_clear_error(index_url: str, tmp_path: Path) -> None:
    with pytest.raises(PackageIndexError, match=r"is not a simple-API page \(KeyError"):
        download("malformed", "malformed-1.0.tar.gz", "0" * 64, tmp_path / "m",
                 _settings(f"{index_url}/simple/"))


def test_the_first_index_that_lists_the_file_is_used(index_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty-index"
    empty.mkdir()
    target = tmp_path / "out" / "good.tar.gz"
    download("good", "good-1.0.tar.gz", _sha(GOOD), target,
             _settings(empty.as_uri() + "/", f"{index_url}/simple/"))
    assert target.read_bytes() == GOOD


def test_a_local_file_index(tmp_path: Path) -> None:
    root = tmp_path / "simple"
    (root / "good").mkdir(parents=True)
    (tmp_path / "good-1.0.tar.gz").write_bytes(GOOD)
    (root / "good" / "index.html").write_text(
        f'<a href="../../good-1.0.tar.gz#sha256={_sha(GOOD)}">good-1.0.tar.gz</a>')
    target = tmp_path / "cache" / "good-1.0.tar.gz"
    download("good", "good-1.0.tar.gz", _sha(GOOD), target, _settings(root.as_uri()))
    assert target.read_bytes() == GOOD


def test_an_unreachable_index_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PackageIndexError,
                       match=r"not available .*127\.0\.0\.1:9/simple/: .*refused"):
        download("good", "good-1.0.tar.gz", _sha(GOOD), tmp_path / "g",
                 _settings("http://127.0.0.1:9/simple/"))


def test_credentials_go_to_their_own_host_only_and_are_never_printed(
        index_url: str, tmp_path: Path) -> None:
    secret_index = index_url.replace("http://", "http://alice:s3cret@") + "/absent-root/"
    _Index.seen_auth.clear()
    with pytest.raises(PackageIndexError) as failed:
        download("good", "good-1.0.tar.gz", _sha(GOOD), tmp_path / "g",
                 _settings(secret_index))
    assert "s3cret" not in str(failed.value) and "alice:***@" in str(failed.value)
    assert _Index.seen_auth and all(a and a.startswith("Basic ") for a in _Index.seen_auth)
    assert package_index.redact("https://tok@host/simple/") == "https://***@host/simple/"


def test_a_broken_certificate_setting_is_a_clear_error(tmp_path: Path) -> None:
    settings = IndexSettings(indexes=("https://127.0.0.1:9/simple/",),
                             cert=str(tmp_path / "missing.pem"), retries=1)
    with pytest.raises(PackageIndexError, match=r"certificate bundle .* cannot be used"):
        download("good", "good-1.0.tar.gz", _sha(GOOD), tmp_path / "g", settings)


def test_pip_settings_are_read_with_pips_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPICE_ENV_INDEX_URL", raising=False)
    config = {"global.index-url": "https://mirror.example/simple",
              "global.extra-index-url": "file:///opt/a/simple file:///opt/b/simple",
              "install.index-url": "https://install.example/simple",
              ":env:.cert": "/etc/ca.pem", "global.timeout": "15"}
    settings = package_index.settings_from_environment(config)
    assert settings.indexes == ("https://install.example/simple/", "file:///opt/a/simple/",
                                "file:///opt/b/simple/")
    assert settings.cert == "/etc/ca.pem" and settings.timeout == 15.0
    config[":env:.index-url"] = "https://env.example/simple/"
    assert package_index.settings_from_environment(config).indexes[0] == \
        "https://env.example/simple/"
    assert package_index.settings_from_environment({}).indexes == (package_index.PYPI_SIMPLE,)
    monkeypatch.setenv("SPICE_ENV_INDEX_URL", "http://a/simple http://b/simple/")
    assert package_index.settings_from_environment(config).indexes == ("http://a/simple/",
                                                                       "http://b/simple/")


def test_pip_config_is_read_from_pip_itself(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://conf.example/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.delenv("SPICE_ENV_INDEX_URL", raising=False)
    settings = package_index.settings_from_environment()
    assert settings.indexes[0] == "https://conf.example/simple/"


def test_fetch_archive_uses_the_cache_and_replaces_a_bad_copy(
        index_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPICE_ENV_CACHE", str(tmp_path))
    monkeypatch.setenv("SPICE_ENV_INDEX_URL", f"{index_url}/simple/")
    archive = assets.PackageArchive(name="good", version="1.0", filename="good-1.0.tar.gz",
                                    sha256=_sha(GOOD))
    cached = tmp_path / "downloads" / archive.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"a corrupted earlier download")
    assert assets.fetch_archive(archive).read_bytes() == GOOD
    monkeypatch.setenv("SPICE_ENV_INDEX_URL", "http://127.0.0.1:9/simple/")
    assert assets.fetch_archive(archive) == cached  # verified copy: no index asked
    bad = assets.PackageArchive(name="tampered", version="1.0",
                                filename="tampered-1.0.tar.gz", sha256=_sha(GOOD))
    monkeypatch.setenv("SPICE_ENV_INDEX_URL", f"{index_url}/simple/")
    with pytest.raises(assets.AssetError, match=r"tampered==1\.0: .*refusing it"):
        assets.fetch_archive(bad)
