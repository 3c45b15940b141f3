"""Downloading a dataset's files from a public address, with a SHA-256 check and atomic writes.

A dataset spec lists :class:`Source` objects; each names files at fixed addresses (raw GitHub
URLs pinned to a commit where possible) with their SHA-256 where it is known. A download goes to a
temporary file in the destination folder and is renamed into place only after its checksum
matched, so an interrupted or corrupt download never leaves a file that looks complete. Without
network the error is one line naming the address.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from cmhbench.errors import ConfigError, DownloadError
from cmhbench.files import temp_beside
from cmhbench.interfaces import NullProgress, Progress

CHUNK = 1 << 20
TIMEOUT_S = 60

Opener = Callable[..., object]


@dataclass(frozen=True)
class RemoteFile:
    """One file at a public ``url``; saved as ``name``. ``sha256`` (hex) is checked when known.
    ``member`` names a file inside a zip archive to extract (matched by its base name)."""

    url: str
    name: str
    sha256: Optional[str] = None
    size: Optional[int] = None
    member: Optional[str] = None


@dataclass(frozen=True)
class Source:
    """A named set of files (``files``) that together give one of the dataset's layouts; ``note``
    says what they are and where the address comes from."""

    name: str
    files: tuple[RemoteFile, ...]
    note: str = ""

    @property
    def pinned(self) -> bool:
        """True when every file has a known checksum."""
        return all(f.sha256 for f in self.files)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _chunks(response) -> Iterator[bytes]:
    while True:
        chunk = response.read(CHUNK)
        if not chunk:
            return
        yield chunk


def download(url: str, dest: Path, sha256: Optional[str], opener: Optional[Opener] = None,
             progress: Progress = NullProgress()) -> str:
    """Download ``url`` to ``dest`` atomically; returns the file's SHA-256.

    With ``sha256`` given, a different checksum raises :class:`DownloadError` and writes nothing.
    Network failures raise :class:`DownloadError` with one line naming the address. ``opener``
    defaults to ``urllib.request.urlopen`` (looked up when called).
    """
    opener = opener or urllib.request.urlopen
    dest = Path(dest)
    fd, tmp = temp_beside(dest, ".part")
    fh = os.fdopen(fd, "wb")
    h = hashlib.sha256()
    try:
        try:
            response = opener(url, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"cannot download {url}: {reason} (no network, or the address is unreachable); "
                f"download it by hand into {dest.parent}"
            ) from None
        with response, fh:
            headers = getattr(response, "headers", None)
            length = headers.get("Content-Length") if headers is not None else None
            steps = -(-int(length) // CHUNK) if length and str(length).isdigit() else None
            try:
                for chunk in progress.track(_chunks(response), steps, f"download {dest.name}"):
                    h.update(chunk)
                    fh.write(chunk)
            except (urllib.error.URLError, OSError) as exc:
                raise DownloadError(f"cannot download {url}: connection lost ({exc})") from None
        digest = h.hexdigest()
        if sha256 and digest != sha256.lower():
            raise DownloadError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest}; nothing was written")
        os.replace(tmp, dest)
        return digest
    except BaseException:
        fh.close()
        Path(tmp).unlink(missing_ok=True)
        raise


def extract_member(archive: Path, member: str, dest: Path) -> None:
    """Extract the zip entry whose base name is ``member`` to ``dest`` atomically."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if Path(n).name == member]
            if not names:
                raise DownloadError(f"{archive}: the archive holds no {member}")
            fd, tmp = temp_beside(dest, ".part")
            try:
                with zf.open(names[0]) as src, os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive}: not a zip archive ({exc})") from None


def fetch(source: Source, dest_dir: Path, sha256: Optional[str] = None, verify: bool = True,
          opener: Optional[Opener] = None, progress: Progress = NullProgress()) -> list[tuple[Path, str, str]]:
    """Download every file of ``source`` into ``dest_dir``; returns ``(path, sha256, status)`` per file.

    ``status`` is ``downloaded`` or ``present`` (a file already there with the right checksum).
    A file without a pinned checksum needs ``sha256`` (single-file sources) or ``verify=False``.
    """
    if sha256 and len(source.files) != 1:
        raise ConfigError(f"--sha256 applies to single-file sources; source {source.name!r} has {len(source.files)} files")
    if verify and not sha256 and not source.pinned:
        raise ConfigError(
            f"source {source.name!r} has no published checksum: pass --sha256 HEX to check the download, "
            "or --no-verify to accept it unchecked (its checksum is printed)"
        )
    dest_dir = Path(dest_dir)
    created = not dest_dir.exists()
    try:
        return _fetch_files(source, dest_dir, sha256, verify, opener, progress)
    except BaseException:
        if created and dest_dir.is_dir() and not any(dest_dir.iterdir()):
            dest_dir.rmdir()
        raise


def _fetch_files(source: Source, dest_dir: Path, sha256: Optional[str], verify: bool, opener: Optional[Opener],
                 progress: Progress) -> list[tuple[Path, str, str]]:
    out = []
    for remote in source.files:
        expected = (sha256 or remote.sha256) if verify else None
        target = dest_dir / remote.name
        if target.is_file() and (expected is None or remote.member or sha256_of(target) == expected.lower()):
            out.append((target, sha256_of(target), "present"))
            continue
        if target.exists():
            raise DownloadError(f"{target} exists but its checksum differs from {expected}; remove it and fetch again")
        if remote.member:
            archive = dest_dir / (Path(remote.url).name or "download.zip")
            digest = download(remote.url, archive, expected, opener, progress)
            try:
                extract_member(archive, remote.member, target)
            finally:
                archive.unlink(missing_ok=True)
            out.append((target, digest, "downloaded"))
        else:
            out.append((target, download(remote.url, target, expected, opener, progress), "downloaded"))
    return out
