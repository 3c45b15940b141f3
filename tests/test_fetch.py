"""`cmhbench data fetch` and the downloader, with file:// addresses and a failing opener (no network)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import urllib.error
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

import cmhbench.data.builtin as builtin
from cmh_files import mir_arrays, write_mirflickr
from cmhbench.cli import app
from cmhbench.data.fetch import RemoteFile, Source, fetch
from cmhbench.data.wiki import WIKI, load_wiki
from cmhbench.errors import ConfigError, DownloadError
from test_cli import assert_one_line_error

runner = CliRunner()


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def no_leftovers(folder):
    return not [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_download_checks_the_checksum_and_is_atomic(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"cross-modal" * 1000)
    good = Source("s", (RemoteFile(src.as_uri(), "data.bin", sha(src)),))
    (path, digest, status), = fetch(good, tmp_path / "out")
    assert status == "downloaded" and path.read_bytes() == src.read_bytes() and digest == sha(src)
    assert fetch(good, tmp_path / "out")[0][2] == "present"
    bad = Source("s", (RemoteFile(src.as_uri(), "other.bin", "0" * 64),))
    with pytest.raises(DownloadError, match=r"checksum mismatch for file://.*expected sha256 0{64}, got [0-9a-f]{64}; nothing was written"):
        fetch(bad, tmp_path / "out")
    assert not (tmp_path / "out" / "other.bin").exists() and no_leftovers(tmp_path)


def test_offline_is_one_clear_error_and_leaves_nothing(tmp_path):
    def offline(url, timeout):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    with pytest.raises(DownloadError, match=r"cannot download https://raw.githubusercontent.com/.*wikiData.mat: .*no network"):
        fetch(WIKI.sources[0], tmp_path / "wiki", opener=offline)
    assert not (tmp_path / "wiki").exists()


def test_unpublished_checksum_needs_sha256_or_no_verify(tmp_path):
    arrays = mir_arrays(np.random.default_rng(0), n=40, unlabelled=0, untagged=0)
    write_mirflickr(tmp_path / "build", "flickr25k-features", "v73", arrays)
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(tmp_path / "build" / "FLICKR-25K.mat", "data/FLICKR-25K.mat")
        zf.writestr("data/vgg_net.mat", b"not needed")
    source = Source("dcmh", (RemoteFile(archive.as_uri(), "FLICKR-25K.mat", member="FLICKR-25K.mat"),))
    with pytest.raises(ConfigError, match="has no published checksum: pass --sha256 HEX"):
        fetch(source, tmp_path / "mir")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(source, tmp_path / "mir", sha256="f" * 64)
    (path, _, status), = fetch(source, tmp_path / "mir", sha256=sha(archive))
    assert status == "downloaded" and path.read_bytes() == (tmp_path / "build" / "FLICKR-25K.mat").read_bytes()
    assert sorted(p.name for p in (tmp_path / "mir").iterdir()) == ["FLICKR-25K.mat"]  # archive removed


@pytest.fixture
def local_wiki_source(shared_data, monkeypatch):
    """The wiki spec with its public address replaced by the shared file (same bytes, same checksum)."""
    real = shared_data / "wiki" / "wikiData.mat"
    remote = dataclasses.replace(WIKI.sources[0].files[0], url=real.as_uri())
    spec = dataclasses.replace(WIKI, sources=(dataclasses.replace(WIKI.sources[0], files=(remote,)),))
    monkeypatch.setattr(builtin, "BUILTIN", tuple(spec if s.name == "wiki" else s for s in builtin.BUILTIN))
    return real


def test_cli_fetch_wiki_then_load(tmp_path, local_wiki_source):
    res = runner.invoke(app, ["data", "fetch", "wiki", "--dest", str(tmp_path / "wiki"), "-q"])
    assert res.exit_code == 0, res.output
    assert "downloaded" in res.output and WIKI.sources[0].files[0].sha256 in res.output
    assert len(load_wiki(tmp_path / "wiki")) == 2866
    again = runner.invoke(app, ["data", "fetch", "wiki", "--dest", str(tmp_path / "wiki"), "-q"])
    assert again.exit_code == 0 and "present" in again.output
    info = json.loads(runner.invoke(app, ["data", "info", "wiki", "--data-dir", str(tmp_path / "wiki"), "--checksums", "--json"]).output)
    (hit,) = [h for e in info["looked"] for hits in e["files"].values() for h in hits]
    assert hit["sha256"] == WIKI.sources[0].files[0].sha256 and hit["matches_source"] == "bmc-sdnu"


def test_cli_fetch_offline_and_bad_requests(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    res = runner.invoke(app, ["data", "fetch", "wiki", "--dest", str(tmp_path / "w"), "-q"])
    assert_one_line_error(res, "cannot download https://raw.githubusercontent.com/BMC-SDNU", code=2)
    assert_one_line_error(runner.invoke(app, ["data", "fetch", "nus-wide-tc10"]), "has no public address")
    assert_one_line_error(runner.invoke(app, ["data", "fetch", "wiki", "--source", "x", "--dest", str(tmp_path)]),
                          "has no source 'x' (it has bmc-sdnu)")
    monkeypatch.delenv("CMHBENCH_DATA", raising=False)
    assert_one_line_error(runner.invoke(app, ["data", "fetch", "wiki"]), "pass --dest DIR or set CMHBENCH_DATA")
    assert_one_line_error(runner.invoke(app, ["data", "fetch", "mirflickr25k", "--dest", str(tmp_path)]),
                          "has no published checksum")
