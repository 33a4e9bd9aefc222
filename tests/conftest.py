"""Shared fixtures: real encoded media (made once per session), a library with its
manifest and config, and the POOL sandbox on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

import media
from poold.config import load
from poold.sandbox import Sandbox

USERID = 777
API_KEY = "test-api-key-0123456789"
API_SECRET = "test-api-secret-9876543210"


@pytest.fixture(scope="session")
def encoded(tmp_path_factory):
    """encoded(kind) -> path of one real file of that kind, encoded once per session."""
    folder = tmp_path_factory.mktemp("encoded")
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = Path(media.make(folder / f"{kind}{media.extension(kind)}", kind, seconds=1.5))
        return cache[kind]

    return get


@pytest.fixture
def copy_of(request, tmp_path):
    """copy_of(name) -> a fresh copy of the test module's ``files[name]``, to damage."""
    files = request.getfixturevalue("files")

    def copy(name: str) -> str:
        target = tmp_path / Path(files[name]).name
        shutil.copyfile(files[name], target)
        return str(target)

    return copy


def assert_corrupt(path, *reasons: str):
    from poold.integrity import check_file

    verdict = check_file(path)
    assert verdict.status == "corrupt" and verdict.reason in reasons, verdict
    return verdict


@pytest.fixture
def sandbox():
    with Sandbox(userid=USERID, api_key=API_KEY, api_secret=API_SECRET) as server:
        yield server


@dataclass
class Library:
    folder: Path
    root: Path
    manifest: Path
    config_path: Path
    paths: dict[int, Path]

    def config(self):
        return load(self.config_path)

    def write_config(self, base_url: str | None = None, extra: str = "") -> None:
        pool = ""
        if base_url:
            pool = (f'[pool]\nbase_url = "{base_url}"\nuserid = {USERID}\n'
                    f'api_key = "{API_KEY}"\napi_secret = "{API_SECRET}"\n')
        self.config_path.write_text(
            f'[library]\nroot = "library"\nmanifest = "{self.manifest.name}"\n\n{pool}\n'
            f'[state]\ndir = "state"\n{extra}\n')
        self.config_path.chmod(0o600)


@pytest.fixture
def make_library(tmp_path, encoded):
    """make_library(kinds, base_url=None, manifest_format="json") -> Library.

    Track ids are 1001, 1002, ... in the order of ``kinds``.
    """

    def build(kinds=("mp3", "m4a", "flac"), base_url=None, extra="", manifest_format="json") -> Library:
        root = tmp_path / "library"
        rows, paths = [], {}
        for number, kind in enumerate(kinds, 1001):
            relative = f"crate{number % 3}/track{number}{media.extension(kind)}"
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(encoded(kind), target)
            rows.append({"trackid": number, "path": relative})
            paths[number] = target
        manifest = tmp_path / f"manifest.{manifest_format}"
        write_manifest(manifest, rows)
        library = Library(tmp_path, root, manifest, tmp_path / "config.toml", paths)
        library.write_config(base_url, extra)
        return library

    return build


def write_manifest(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps({"tracks": rows}))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        fields = sorted({key for row in rows for key in row}, key=lambda k: (k != "trackid", k != "path", k))
        lines = [",".join(fields)] + [",".join(str(row.get(f, "")) for f in fields) for row in rows]
        path.write_text("\n".join(lines) + "\n")
