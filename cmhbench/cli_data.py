"""``cmhbench data list|info|fetch`` and ``cmhbench features extract``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from cmhbench.cli_support import registry, stderr, stdout, user_errors
from cmhbench.errors import CmhbenchError, ConfigError, DataError

data_app = typer.Typer(no_args_is_help=True, help="Datasets: what they are, where their files are, how to fetch them.")
features_app = typer.Typer(no_args_is_help=True, help="Turn raw images and texts into cached features.")

# Extraction does not depend on the split; a one-query split keeps every dataset loadable.
EXTRACTION_PROTOCOL = "ucch:query=1"


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


@data_app.command("list")
@user_errors
def data_list(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """The registered datasets with their expected size, default protocol and file layouts."""
    specs = registry().datasets.list()
    rows = [
        {
            "name": s.name, "items": s.items, "classes": s.classes, "default_protocol": s.default_protocol,
            "layouts": [layout.name for layout in s.layouts], "fetchable": bool(s.sources), "description": s.description,
        }
        for s in specs
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="datasets (`cmhbench data info NAME` for details)", title_justify="left")
    for col in ("name", "items", "classes", "default protocol", "file layouts", "fetch"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], str(r["items"] or "-"), str(r["classes"] or "-"), r["default_protocol"],
                      ", ".join(r["layouts"]) or "(built in)", "yes" if r["fetchable"] else "-")
    stdout.print(table)


def _looked(spec, data_dir: Optional[Path], checksums: bool = False) -> list[dict[str, Any]]:
    from cmhbench.data.fetch import sha256_of
    from cmhbench.data.locate import candidate_dirs

    published = {f.sha256: src.name for src in spec.sources for f in src.files if f.sha256}
    out = []
    for folder in candidate_dirs(data_dir, spec.subdir or spec.name):
        for layout in spec.layouts:
            files = {}
            for pattern in layout.files:
                hits = sorted(folder.glob(pattern)) if "*" in pattern else [folder / pattern]
                hits = [h for h in hits if h.is_file()]
                files[pattern] = [{"path": str(h), "bytes": h.stat().st_size} for h in hits]
                if checksums:
                    for hit in files[pattern]:
                        hit["sha256"] = sha256_of(Path(hit["path"]))
                        hit["matches_source"] = published.get(hit["sha256"])
            out.append({"folder": str(folder), "layout": layout.name, "complete": all(files.values()), "files": files})
    return out


def _split_row(splits, default: bool) -> dict[str, Any]:
    return {"protocol": splits.protocol, "sizes": splits.sizes(), "seed": splits.seed, "checksum": splits.checksum(),
            "default": default}


def _protocol_rows(spec, data_dir: Optional[Path], labels) -> list[dict[str, Any]]:
    """The default split, then every named protocol with this dataset's sizes (or why it does not fit)."""
    from cmhbench.data.protocols import PROTOCOLS, resolve

    rows = []
    if spec.protocol_aware and spec.default_protocol in PROTOCOLS:
        resolved = resolve(spec.default_protocol, spec.protocol_params)
        if labels.shape[0] < resolved.needed_items:
            rows.append({"protocol": resolved.id, "error": f"needs >= {resolved.needed_items} items", "default": True})
        else:
            rows.append(_split_row(resolved.splits(labels), True))
    else:
        try:
            rows.append(_split_row(spec.open(data_dir).splits, True))
        except CmhbenchError as exc:
            rows.append({"protocol": spec.default_protocol, "error": " ".join(str(exc).split()), "default": True})
    for name in PROTOCOLS:
        resolved = resolve(name, spec.protocol_params)
        if resolved.id == rows[0]["protocol"]:
            continue
        if labels.shape[0] < resolved.needed_items:
            rows.append({"protocol": resolved.id, "error": f"needs >= {resolved.needed_items} items", "default": False})
        else:
            rows.append(_split_row(resolved.splits(labels), False))
    return rows


def dataset_info(name: str, data_dir: Optional[Path], checksums: bool = False) -> dict[str, Any]:
    """Everything ``cmhbench data info`` shows, as a JSON-ready dict (file SHA-256s with ``checksums``)."""
    from cmhbench.data.dataset import RawData

    spec = registry().datasets.get(name)
    info: dict[str, Any] = {**spec.metadata(), "looked": _looked(spec, data_dir, checksums) if spec.layouts else []}
    info["sources"] = [
        {"name": src.name, "note": src.note,
         "files": [{"name": f.name, "url": f.url, "sha256": f.sha256} for f in src.files]}
        for src in spec.sources
    ]
    if spec.layouts and not any(entry["complete"] for entry in info["looked"]):
        info["loaded"] = None
        return info
    try:
        loaded = spec.open(data_dir, EXTRACTION_PROTOCOL if spec.protocol_aware else None)
    except CmhbenchError as exc:
        info["loaded"] = {"error": " ".join(str(exc).split())}
        return info
    summary = {"origin": loaded.origin, "items": len(loaded), "classes": int(loaded.labels.shape[1]),
               "details": loaded.details}
    if isinstance(loaded, RawData):
        summary["image"] = "raw pixels (features come from an image encoder)"
        summary["text_dim"] = int(loaded.text.shape[1]) if loaded.text is not None else "raw texts"
    else:
        summary.update(image_dim=int(loaded.image.shape[1]), text_dim=int(loaded.text.shape[1]), revision=loaded.revision)
    info["loaded"] = summary
    info["protocols"] = _protocol_rows(spec, data_dir, loaded.labels)
    return info


@data_app.command("info")
@user_errors
def data_info(
    name: str = typer.Argument(..., help="Dataset name (see `cmhbench data list`)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder holding the dataset's files."),
    checksums: bool = typer.Option(False, "--checksums", help="Also hash every file found (SHA-256; slow on GBs)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Expected files, where they were looked for, sizes, splits per protocol and checksums."""
    info = dataset_info(name, data_dir, checksums)
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        _fail_if_unloadable(info)
        return
    stdout.print(f"[bold]{info['name']}[/]: {info['description']}", highlight=False)
    stdout.print(f"paper: {info['paper']}", highlight=False)
    layouts = Table(title="file layouts (first complete one is used)", title_justify="left")
    for col in ("layout", "files", "holds"):
        layouts.add_column(col, overflow="fold")
    for layout in info["layouts"]:
        layouts.add_row(layout["name"], " + ".join(layout["files"]), layout["holds"])
    stdout.print(layouts)
    if info["looked"]:
        folders = list(dict.fromkeys(entry["folder"] for entry in info["looked"]))
        stdout.print(f"looked in: {', '.join(folders)}", highlight=False)
        found = [(e, h) for e in info["looked"] for hits in e["files"].values() for h in hits]
        if found:
            looked = Table(title="files found", title_justify="left")
            for col in ("layout", "file", "size"):
                looked.add_column(col, overflow="fold")
            for entry, hit in found:
                looked.add_row(entry["layout"] + (" (complete)" if entry["complete"] else " (incomplete)"), hit["path"],
                               _human(hit["bytes"]))
            stdout.print(looked)
            if checksums:  # plain lines: a checksum or path folded over two lines cannot be copied
                stdout.print("sha256 of the files found:", highlight=False)
                for hit in dict((h["path"], h) for _, h in found).values():
                    source = hit["matches_source"]
                    stdout.print(f"  {hit['sha256']}  {hit['path']}" + (f"  (= source {source})" if source else ""),
                                 highlight=False, markup=False)
        else:
            stdout.print("no file of any layout found there", highlight=False)
    elif not info["layouts"]:
        stdout.print("no files: the dataset is built in", highlight=False)
    else:
        stdout.print("no folder to look in: pass --data-dir or set CMHBENCH_DATA", highlight=False)
    loaded = info.get("loaded")
    if loaded and "error" in loaded:
        stdout.print(f"[red]cannot load:[/] {loaded['error']}", highlight=False)
    elif loaded:
        dims = f"image {loaded.get('image_dim', loaded.get('image'))}, text {loaded.get('text_dim')}"
        stdout.print(f"loaded from {loaded['origin']}: {loaded['items']} items, {loaded['classes']} classes, {dims}"
                     + (f", revision {loaded['revision']}" if "revision" in loaded else ""), highlight=False)
        details = {k: v for k, v in loaded["details"].items() if k != "features"}
        if details:
            stdout.print("details: " + ", ".join(f"{k}={v}" for k, v in details.items()), highlight=False)
        protocols = Table(title="split protocols", title_justify="left")
        for col in ("protocol", "query", "database", "train", "seed"):
            protocols.add_column(col)
        protocols.add_column("checksum or note", min_width=16, overflow="fold")
        for row in info.get("protocols", []):
            name_cell = row["protocol"] + (" (default)" if row.get("default") else "")
            if "error" in row:
                protocols.add_row(name_cell, "-", "-", "-", "-", row["error"])
            else:
                sizes = row["sizes"]
                protocols.add_row(name_cell, str(sizes["query"]), str(sizes["database"]), str(sizes["train"]),
                                  str(row["seed"]) if row["seed"] is not None else "-", row["checksum"])
        stdout.print(protocols)
    if info["sources"]:
        stdout.print(f"fetch sources (`cmhbench data fetch {info['name']} [--source NAME]`):", highlight=False, markup=False)
        for src in info["sources"]:
            stdout.print(f"  {src['name']}" + (f": {src['note']}" if src.get("note") else ""), highlight=False, markup=False)
            for f in src["files"]:  # one unwrapped line each, so that they can be copied
                stdout.print(f"    {f['name']}  url {f['url']}", highlight=False, markup=False)
                stdout.print(f"    {f['name']}  sha256 {f['sha256'] or 'not published'}", highlight=False, markup=False)
    else:
        stdout.print("fetch: no public address cmhbench can download from; place the files by hand", highlight=False)
    _fail_if_unloadable(info)


def _fail_if_unloadable(info: dict[str, Any]) -> None:
    """Exit with an error (after the information was printed) when the files found did not load."""
    loaded = info.get("loaded")
    if loaded and "error" in loaded:
        raise DataError(f"{info['name']}: the files found cannot be loaded: {loaded['error']}")


@data_app.command("fetch")
@user_errors
def data_fetch(
    name: str = typer.Argument(..., help="Dataset name."),
    source: Optional[str] = typer.Option(None, "--source", help="Which of the dataset's sources (default: the first)."),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Target folder (default: $CMHBENCH_DATA/<dataset>)."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Expected SHA-256 where none is published."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Accept a source without a published checksum unchecked."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Download a dataset's files from its public address, checking their SHA-256."""
    from cmhbench.data.fetch import fetch
    from cmhbench.progress import RichProgress

    spec = registry().datasets.get(name)
    if not spec.sources:
        raise ConfigError(f"dataset {name!r} has no public address cmhbench can download from; "
                          f"place its files by hand (see `cmhbench data info {name}`)")
    chosen = spec.sources[0] if source is None else next((s for s in spec.sources if s.name == source), None)
    if chosen is None:
        raise ConfigError(f"dataset {name!r} has no source {source!r} (it has {', '.join(s.name for s in spec.sources)})")
    if dest is None:
        env = os.environ.get("CMHBENCH_DATA")
        if not env:
            raise ConfigError("pass --dest DIR or set CMHBENCH_DATA")
        dest = Path(env) / (spec.subdir or spec.name)
    progress = RichProgress(stderr, enabled=not quiet)
    with progress:
        done = fetch(chosen, dest, sha256=sha256, verify=not no_verify, progress=progress)
    for path, digest, status in done:
        stdout.print(f"{status}: {path} sha256 {digest}", highlight=False)


@features_app.command("extract")
@user_errors
def features_extract(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset whose raw images/texts to encode."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder holding the dataset's files."),
    image_encoder: Optional[str] = typer.Option(None, "--image-encoder", help="timm model name (default vgg19.tv_in1k)."),
    image_weights: str = typer.Option("pretrained", "--image-weights", help="pretrained (timm's source), random, or a checkpoint file."),
    text_encoder: Optional[str] = typer.Option(
        None, "--text-encoder", help="sentence-transformers name or folder (default all-MiniLM-L6-v2), or bow[:min=N]."
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Items per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache folder (default $CMHBENCH_CACHE or ~/.cache/cmhbench)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Encode a dataset's raw images (timm) and texts (sentence-transformers or bag-of-words) into the cache."""
    from cmhbench.data.dataset import RawData
    from cmhbench.features.extract import FeatureRequest, materialize
    from cmhbench.progress import RichProgress

    spec = registry().datasets.get(dataset)
    loaded = spec.open(data_dir, EXTRACTION_PROTOCOL if spec.protocol_aware else None, raw=True)
    if not isinstance(loaded, RawData):
        layout = loaded.details.get("layout", "")
        raise ConfigError(f"dataset {dataset!r} in {loaded.origin} holds features already"
                          f"{f' (layout {layout})' if layout else ''}: nothing to extract")
    request = FeatureRequest(image_encoder=image_encoder, image_weights=image_weights, text_encoder=text_encoder,
                             batch_size=batch_size, device=device, cache_dir=cache)
    progress = RichProgress(stderr, enabled=not quiet)
    with progress:
        data, reports = materialize(loaded, request, progress)
    rows = [{"modality": r.modality, "encoder": r.encoder, "items": r.items, "dim": r.dim, "status": r.status,
             "seconds": round(r.seconds, 3), "items_per_s": round(r.items_per_s, 1),
             "path": str(r.path) if r.path else None} for r in reports]
    if as_json:
        print(json.dumps({"dataset": dataset, "revision": loaded.revision, "extractions": rows}, indent=2))
        return
    table = Table(title=f"features of {dataset} (raw revision {loaded.revision})", title_justify="left")
    for col in ("modality", "encoder", "items", "dim", "status", "seconds", "items/s", "file"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["modality"], r["encoder"], str(r["items"]), str(r["dim"]), r["status"], f"{r['seconds']:.2f}",
                      f"{r['items_per_s']:.1f}" if r["items_per_s"] else "-", r["path"] or "-")
    stdout.print(table)
