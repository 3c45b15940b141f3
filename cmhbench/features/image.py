"""Image encoders through timm: any model name; pretrained, random or local-checkpoint weights.

Features are the model's pooled pre-logit output (``num_features`` wide: 4096 for VGG fc7, 2048 for
ResNet-50), computed in eval mode with the model's own test transform (resize, centre crop,
normalisation from its pretrained config).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cmhbench.errors import ConfigError, DownloadError, UnknownNameError

PRETRAINED = "pretrained"
RANDOM = "random"


def safe_id(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_`` (for file names)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class TimmImageEncoder:
    """A timm model as a frozen image feature extractor (built on first use, so that a cache hit
    costs no model loading).

    ``weights`` is ``"pretrained"`` (timm's usual source, the Hugging Face Hub: needs network or a
    filled cache), ``"random"`` (initialised from ``seed``) or the path of a checkpoint file
    (``.safetensors``, or a ``torch.save`` state dict read with ``weights_only=True``).
    """

    kind = "timm"

    def __init__(self, model: str, weights: str = PRETRAINED, device: torch.device | str = "cpu", seed: int = 0) -> None:
        import timm

        if not timm.is_model(model):
            import difflib

            close = difflib.get_close_matches(model, timm.list_models(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownNameError(f"unknown timm model {model!r}{hint} (see timm.list_models())")
        self.model_name = model
        self.device = torch.device(device)
        self.seed = seed
        self.dim: int | None = None
        self.net = None
        if weights == PRETRAINED:
            cfg = timm.models.get_pretrained_cfg(model)
            tag = (cfg.hf_hub_id or cfg.url) if cfg is not None else ""
            self.weights, self.revision = PRETRAINED, f"timm {timm.__version__}, {tag or model}"
            self.id = safe_id(f"timm-{model}-pretrained")
        elif weights == RANDOM:
            self.weights, self.revision = RANDOM, f"timm {timm.__version__}, random init seed {seed}"
            self.id = safe_id(f"timm-{model}-random{seed}")
        else:
            path = Path(weights)
            if not path.is_file():
                raise ConfigError(f"--image-weights: {weights!r} is neither pretrained, random nor a checkpoint file")
            digest = file_sha256(path)
            self.weights, self.revision = str(path), f"file sha256 {digest}"
            self.id = safe_id(f"timm-{model}-file{digest[:12]}")

    def load(self) -> None:
        """Build the network (downloading pretrained weights if asked); done on first use."""
        if self.net is not None:
            return
        import timm

        model = self.model_name
        if self.weights == PRETRAINED:
            try:
                net = timm.create_model(model, pretrained=True)
            except Exception as exc:  # noqa: BLE001 - hub, http and file errors of many kinds
                raise DownloadError(
                    f"cannot load timm's pretrained weights for {model!r} ({_first_line(exc)}); without network "
                    "pass --image-weights PATH (a local checkpoint) or --image-weights random"
                ) from None
        elif self.weights == RANDOM:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                net = timm.create_model(model, pretrained=False)
        else:
            net = timm.create_model(model, pretrained=False)
            _load_checkpoint(net, Path(self.weights), model)
        net.reset_classifier(0)
        self.net = net.eval().to(self.device)
        config = timm.data.resolve_data_config(model=net)
        self.transform = timm.data.create_transform(**config, is_training=False)
        self.dim = int(net.num_features)

    def describe(self) -> dict[str, Any]:
        """What a result records about this encoder."""
        return {"kind": self.kind, "model": self.model_name, "weights": self.weights, "revision": self.revision, "dim": self.dim}

    @torch.no_grad()
    def encode(self, images: Sequence[Any]) -> np.ndarray:
        """``(len(images), dim)`` float32 features of RGB ``PIL.Image`` objects."""
        self.load()
        batch = torch.stack([self.transform(img) for img in images]).to(self.device)
        return self.net(batch).float().cpu().numpy()


def _load_checkpoint(net: torch.nn.Module, path: Path, model: str) -> None:
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), use_ema=False)
    except Exception as exc:  # noqa: BLE001 - torch.load / safetensors errors
        raise ConfigError(f"--image-weights {path}: not a readable checkpoint ({_first_line(exc)})") from None
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ConfigError(f"--image-weights {path}: does not fit timm model {model!r} ({_first_line(exc)})") from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing {', '.join(result.missing_keys[:3])}")
        if result.unexpected_keys:
            parts.append(f"unexpected {', '.join(result.unexpected_keys[:3])}")
        raise ConfigError(f"--image-weights {path}: does not fit timm model {model!r} ({'; '.join(parts)})")
