"""The ``cmhbench`` command line (typer).

User mistakes end in one ``error:`` line on stderr and a non-zero exit code, never a traceback;
set ``CMHBENCH_DEBUG=1`` to see the traceback of an unexpected failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from cmhbench.cli_support import KINDS, registry as _registry, stderr, stdout, user_errors
from cmhbench.errors import ConfigError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Cross-modal hashing benchmark: unsupervised teachers, distillation strategies, supervised students.",
)


def _int_list(text: str, option: str) -> tuple[int, ...]:
    values = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            value = int(part)
        except ValueError:
            raise ConfigError(f"{option}: {part.strip()!r} is not an integer") from None
        if value <= 0:
            raise ConfigError(f"{option}: values must be positive, got {value}")
        values.append(value)
    return tuple(values)


@app.command()
@user_errors
def run(
    teacher: Optional[str] = typer.Option(None, "--teacher", "-t", help="Unsupervised teacher (see `cmhbench list teachers`)."),
    strategy: str = typer.Option("ukd", "--strategy", help="Distillation strategy."),
    student: str = typer.Option("dcmh", "--student", "-s", help="Supervised student; `none` evaluates the teacher's own codes."),
    dataset: str = typer.Option("synthetic", "--dataset", "-d", help="Dataset name (see `cmhbench list datasets`)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder holding the dataset's files (default: $CMHBENCH_DATA/<dataset>)."),
    bits: str = typer.Option("16,32,64", "--bits", "-b", help="Comma-separated code lengths."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw in the run."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    results: Path = typer.Option(Path("results"), "--results", help="Result store folder."),
    set_: List[str] = typer.Option([], "--set", help="Hyperparameter override key=value (or role.key=value); repeatable."),
    force: bool = typer.Option(False, "--force", help="Recompute results that already exist."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    protocol: Optional[str] = typer.Option(
        None, "--protocol", help="Split protocol NAME[:query=N,train=N,database=N,seed=N] (dcmh, djsrh, ukd, ucch, dadh); default: the dataset's."
    ),
    image_encoder: Optional[str] = typer.Option(
        None, "--image-encoder", help="timm model for raw images (default vgg19.tv_in1k); also prefers a dataset's pixel files."
    ),
    image_weights: str = typer.Option("pretrained", "--image-weights", help="pretrained (timm's source), random, or a checkpoint file."),
    text_encoder: Optional[str] = typer.Option(
        None, "--text-encoder", help="sentence-transformers name or folder, or bow[:min=N], for raw texts."
    ),
    feature_cache: Optional[Path] = typer.Option(None, "--feature-cache", help="Feature cache folder (default $CMHBENCH_CACHE or ~/.cache/cmhbench)."),
) -> None:
    """Train a teacher, distil it into a student and evaluate both retrieval directions per code length."""
    from cmhbench.config import parse_assignments
    from cmhbench.features.extract import FeatureRequest
    from cmhbench.progress import RichProgress
    from cmhbench.runner import RunRequest, Runner, parse_bits

    request = RunRequest(
        teacher=teacher or "none",
        strategy=strategy,
        student=student,
        dataset=dataset,
        data_dir=data_dir,
        bits=parse_bits(bits),
        seed=seed,
        device=device,
        results_dir=results,
        overrides=tuple(parse_assignments(set_)),
        force=force,
        protocol=protocol,
        features=FeatureRequest(
            image_encoder=image_encoder, image_weights=image_weights, text_encoder=text_encoder, cache_dir=feature_cache
        ),
    )
    progress = RichProgress(stderr, enabled=not quiet)
    runner = Runner(_registry(), progress=progress, log=lambda msg: stderr.print(msg, highlight=False))
    with progress:
        prepared = runner.prepare(request)
        data = prepared[1]
        if data.synthetic:
            stderr.print(
                f"[yellow]dataset {data.name!r} is generated data: its numbers show that the pipeline works, "
                "not how methods rank[/]"
            )
        outcomes = runner.run(request, prepared)
    _print_run_table(outcomes)


def _print_run_table(outcomes) -> None:
    first = outcomes[0].result
    names = first["key"]
    synthetic = " (SYNTHETIC)" if first["dataset"].get("synthetic") else ""
    title = (
        f"{names['teacher']} -> {names['strategy']} -> {names['student']} on {names['dataset']}{synthetic}, "
        f"protocol {names['protocol']}, seed {names['seed']}"
    )
    table = Table(title=title, title_justify="left")
    for col in ("bits", "i2t mAP", "t2i mAP", "i2t mAP@50", "t2i mAP@50", "train s", "status"):
        table.add_column(col, justify="right" if col != "status" else "left")
    for outcome in outcomes:
        r = outcome.result
        m = r["metrics"]
        train_s = sum(v for k, v in r["timings"].items() if k.endswith("fit_s") or k == "distill_s")
        table.add_row(
            str(outcome.bits),
            f"{m['i2t']['map']:.4f}",
            f"{m['t2i']['map']:.4f}",
            f"{m['i2t'].get('map@50', float('nan')):.4f}",
            f"{m['t2i'].get('map@50', float('nan')):.4f}",
            f"{train_s:.1f}",
            outcome.status,
        )
    stdout.print(table)
    stdout.print(f"results: {outcomes[0].path.parent}", highlight=False)


@app.command("list")
@user_errors
def list_(
    kind: Optional[str] = typer.Argument(None, help="teachers, strategies, students or datasets (default: all)."),
    pattern: str = typer.Option("*", "--pattern", "-p", help="Wildcard filter on names, e.g. 'dj*'."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """List the registered methods and datasets, with their papers and providing plugins."""
    registry = _registry()
    if kind is not None and kind not in KINDS:
        singular = {k[:-1] if not k.endswith("ies") else k[:-3] + "y": k for k in KINDS}
        if kind in singular:
            kind = singular[kind]
        else:
            raise ConfigError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    kinds = [kind] if kind else list(KINDS)
    listing = {k: [spec.metadata() for spec in registry.table(k).list(pattern)] for k in kinds}
    if as_json:
        print(json.dumps(listing, indent=2))
        return
    for k in kinds:
        table = Table(title=k, title_justify="left")
        for col in ("name", "paper", "source"):
            table.add_column(col, overflow="fold")
        for item in listing[k]:
            table.add_row(item["name"], item["paper"], item["source"])
        stdout.print(table)


@app.command("eval")
@user_errors
def eval_(
    codes: Path = typer.Argument(..., help="An .npz with query/db image/text codes and labels."),
    topk: str = typer.Option("50,500", "--topk", help="Comma-separated K of mAP@K."),
    directions: str = typer.Option("i2t,t2i", "--directions", help="Any of i2t, t2i, i2i, t2t."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Evaluate codes produced by any tool under cmhbench's mAP contract."""
    import torch

    from cmhbench.evaluation.crossmodal import CodeSet, evaluate_code_set

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    ks = _int_list(topk, "--topk")
    code_set = CodeSet.load(codes)
    result = evaluate_code_set(
        code_set, directions=[d.strip() for d in directions.split(",") if d.strip()], topk=ks, device=device
    )
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"{codes} ({code_set.bits} bits)", title_justify="left")
    metrics = ["map", *[f"map@{k}" for k in sorted(set(ks))], "map_tie_aware", "p@r2"]
    table.add_column("direction")
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_column("seconds", justify="right")
    for direction, values in result.items():
        table.add_row(direction, *[f"{values[m]:.4f}" for m in metrics], f"{values['seconds']:.2f}")
    stdout.print(table)


from cmhbench.cli_data import data_app, features_app  # noqa: E402 - sub-commands register on import

app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
