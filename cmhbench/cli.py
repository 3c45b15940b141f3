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


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("cmhbench")
        except PackageNotFoundError:
            from cmhbench import __version__ as text
        print(f"cmhbench {text}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Cross-modal hashing benchmark: unsupervised teachers, distillation strategies, supervised students."""


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
    teacher_bits: Optional[int] = typer.Option(
        None, "--teacher-bits", help="Code length the teacher is trained at before distillation (default: the strategy's, e.g. ukd 128; else --bits)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw in the run."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    results: Path = typer.Option(Path("results"), "--results", help="Result store folder."),
    set_: List[str] = typer.Option([], "--set", help="Hyperparameter override key=value (or role.key=value); repeatable."),
    force: bool = typer.Option(False, "--force", help="Recompute results that already exist."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    protocol: Optional[str] = typer.Option(
        None, "--protocol", help="Split protocol NAME[:query=N,train=N,database=N,seed=N] (dcmh, djsrh, ukd, ucch, dadh[:query_at=start|end]); default: the dataset's."
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
    import dataclasses
    import time

    from cmhbench.config import parse_assignments
    from cmhbench.features.extract import FeatureRequest
    from cmhbench.progress import PlainProgress, RichProgress, run_line
    from cmhbench.runner import RunRequest, Runner, parse_bits

    request = RunRequest(
        teacher=teacher or "none",
        strategy=strategy,
        student=student,
        dataset=dataset,
        data_dir=data_dir,
        bits=parse_bits(bits),
        teacher_bits=teacher_bits,
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
    plain = not quiet and not stderr.is_terminal  # nohup, batch jobs: timestamped lines instead of bars
    progress = PlainProgress() if plain else RichProgress(stderr, enabled=not quiet)
    announce = progress.line if plain else (lambda line: None)
    runner = Runner(_registry(), progress=progress, log=lambda msg: stderr.print(msg, highlight=False))
    with progress:
        prepared = runner.prepare(request)
        data = prepared[1]
        if data.synthetic:
            stderr.print(
                f"[yellow]dataset {data.name!r} is generated data: its numbers show that the pipeline works, "
                "not how methods rank[/]"
            )
        outcomes = []
        for one in [dataclasses.replace(request, bits=(b,)) for b in request.bits]:
            announce(run_line("started", one))
            started = time.perf_counter()
            try:
                outcomes += runner.run(one, prepared)
            except Exception as exc:
                announce(run_line("failed", one, error=" ".join(str(exc).split())))
                raise
            announce(run_line("finished", one, time.perf_counter() - started, outcomes[-1].status))
    _print_run_table(outcomes)


def _print_run_table(outcomes) -> None:
    first = outcomes[0].result
    names = first["key"]
    synthetic = " (SYNTHETIC)" if first["dataset"].get("synthetic") else ""
    title = (
        f"{names['teacher']} -> {names['strategy']} -> {names['student']} on {names['dataset']}{synthetic}, "
        f"protocol {names['protocol']}, seed {names['seed']}"
    )
    if first.get("non_default"):
        from cmhbench.config import settings_tag

        title += f" [{settings_tag(first['non_default'])}]"
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
    kind: Optional[str] = typer.Argument(
        None, help="teachers, strategies, students or datasets (default: all); or one method's name, as `show NAME`."
    ),
    pattern: str = typer.Option("*", "--pattern", "-p", help="Wildcard filter on names, e.g. 'dj*'."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """List the registered methods and datasets, with their papers and providing plugins."""
    registry = _registry()
    if kind is not None and kind not in KINDS:
        singular = {k[:-1] if not k.endswith("ies") else k[:-3] + "y": k for k in KINDS}
        if kind in singular:
            kind = singular[kind]
        elif _named(registry, kind):
            show(kind, dataset=None, as_json=as_json)
            return
        else:
            raise ConfigError(f"unknown kind or name {kind!r}; expected one of {', '.join(KINDS)}, or a method's name")
    kinds = [kind] if kind else list(KINDS)
    listing = {k: [spec.metadata() for spec in registry.table(k).list(pattern)] for k in kinds}
    if pattern != "*" and not any(listing.values()):
        raise ConfigError(f"no {' or '.join(kinds)} match {pattern!r} (see `cmhbench list`)")
    if as_json:
        print(json.dumps(listing, indent=2))
        return
    for k in kinds:
        if not listing[k] and pattern != "*":
            continue
        table = Table(title=k, title_justify="left")
        for col in ("name", "paper", "source"):
            table.add_column(col, overflow="fold")
        for item in listing[k]:
            table.add_row(item["name"], item["paper"], item["source"])
        stdout.print(table)


def _named(registry, name: str) -> list:
    """The specs of every kind registered under ``name`` (a method can be a teacher and a student)."""
    return [(k, registry.table(k).get(name)) for k in KINDS if name in registry.table(k)]


@app.command()
@user_errors
def show(
    name: str = typer.Argument(..., help="A teacher, strategy, student or dataset name."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Show the defaults this dataset gets (its official settings)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """One method's paper, code and hyperparameters: type, default, bounds, choices and per-dataset defaults."""
    from cmhbench.config import describe_fields

    registry = _registry()
    found = _named(registry, name)
    if not found:
        import difflib

        every = sorted({n for k in KINDS for n in registry.table(k)})
        close = difflib.get_close_matches(name, every, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see `cmhbench list`)"
        raise ConfigError(f"no method or dataset is called {name!r}{hint}")
    if dataset is not None:
        registry.datasets.get(dataset)
    out = []
    for kind, spec in found:
        if kind == "datasets":
            out.append({**spec.metadata(), "kind": "dataset"})
            continue
        fields = describe_fields(spec.config)
        per_dataset = {k: dict(v) for k, v in spec.dataset_defaults.items()}
        if dataset is not None:
            for f in fields:
                f["default"] = per_dataset.get(dataset, {}).get(f["name"], f["default"])
        out.append({"name": spec.name, "kind": spec.kind, "paper": spec.paper, "code": spec.code, "summary": spec.summary,
                    "source": spec.source, "version": spec.version, "dataset": dataset, "hyperparameters": fields,
                    "dataset_defaults": per_dataset})
    if as_json:
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2, default=str))
        return
    for item in out:
        _print_spec(item)


def _print_spec(item: dict) -> None:
    say = lambda text: stdout.print(text, highlight=False, markup=False)  # noqa: E731
    say(f"{item['name']} ({item['kind']}, from {item['source']} {item.get('version', '')})".rstrip())
    for key in ("paper", "code", "summary", "description"):
        if item.get(key):
            say(f"  {key}: {item[key]}")
    if item["kind"] == "dataset":
        say(f"  files and splits: `cmhbench data info {item['name']}`")
        return
    where = f" on {item['dataset']}" if item.get("dataset") else ""
    table = Table(title=f"hyperparameters{where} (set with --set {item['kind']}.NAME=VALUE)", title_justify="left")
    for col in ("name", "type", "default", "bounds", "choices", "help"):
        table.add_column(col, overflow="fold")
    for f in item["hyperparameters"]:
        table.add_row(f["name"], f["type"], json.dumps(f["default"]), f["bounds"], ", ".join(map(str, f["choices"] or [])), f["help"])
    stdout.print(table)
    if item["dataset_defaults"]:
        say("official per-dataset settings (applied before --set):")
        for name, values in item["dataset_defaults"].items():
            say(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


@app.command("eval")
@user_errors
def eval_(
    codes: Path = typer.Argument(..., help="An .npz with query/db image/text codes and labels."),
    topk: str = typer.Option("50,500", "--topk", help="Comma-separated K of mAP@K."),
    directions: str = typer.Option("i2t,t2i", "--directions", help="Any of i2t, t2i, i2i, t2t."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    engine: str = typer.Option("auto", "--engine", help="auto (torch on CUDA, else the CPU kernel), cpu or torch."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Evaluate codes produced by any tool under cmhbench's mAP contract.

    With --json, each direction also reports `seconds` spent evaluating (start-up excluded)."""
    from cmhbench.evaluation.crossmodal import CodeSet, evaluate_code_set
    from cmhbench.evaluation.metrics import cuda_available

    if device.startswith("cuda") and not cuda_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    if engine not in ("auto", "cpu", "torch"):
        raise ConfigError(f"--engine must be auto, cpu or torch, got {engine!r}")
    ks = _int_list(topk, "--topk")
    code_set = CodeSet.load(codes)
    result = evaluate_code_set(
        code_set, directions=[d.strip() for d in directions.split(",") if d.strip()], topk=ks, device=device, engine=engine
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


@app.command()
@user_errors
def sweep(
    grid: Path = typer.Argument(..., help="A sweep file (.toml, or .yaml with PyYAML)."),
    engine: str = typer.Option("local", "--engine", help="local or ray."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Worker processes (local) or concurrent tasks on a local Ray."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address to join (ray engine)."),
    cpus_per_run: float = typer.Option(1.0, "--cpus-per-run", help="CPUs each Ray task requests."),
    gpus_per_run: float = typer.Option(0.0, "--gpus-per-run", help="GPUs each Ray task requests."),
    results: Optional[Path] = typer.Option(None, "--results", help="Result store (default: the sweep file's `results`)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (a grid block's `device` wins)."),
    force: bool = typer.Option(False, "--force", help="Recompute results that already exist."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Only list what would run: a summary line, then one line per run, marked `run`, or "
        "`stored` when its result exists (it is skipped; with --force every run is `run`), then each stored result "
        "in the results folder that no run of the sweep names (`outside`: other settings or another sweep's)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Run a grid of teacher x strategy x student x bits x seeds; resumable, failures recorded.

    Ctrl-C stops the sweep (exit code 130); rerun the same command to resume it. Off a terminal
    (nohup, batch jobs) progress is written as timestamped lines."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cmhbench.progress import PlainProgress, run_label, run_line
    from cmhbench.sweep import SweepExecutor, load_sweep
    from cmhbench.sweep.execute import plan, results_outside
    from cmhbench.runner import Runner

    registry = _registry()
    spec = load_sweep(grid, registry, results_dir=results, device=device)
    if dry_run:
        runner = Runner(registry)
        todo = plan(spec, runner, force)
        outside = results_outside(spec, runner)
        stdout.print(f"{spec.name}: {len(spec.runs)} runs, {len(todo.stored)} stored, {todo.todo} to run in "
                     f"{len(todo.groups)} teacher groups, {len(todo.failures)} cannot start, {len(outside)} stored "
                     f"results outside the sweep; results in {spec.results_dir}", highlight=False)
        stored, to_run = set(todo.stored), {request for group in todo.groups for request in group}
        for request in spec.runs:
            if request in stored or request in to_run:
                mark = "stored" if request in stored else "run   "
                stdout.print(f"  {mark} {run_label(request)}", highlight=False, markup=False)
        from collections import Counter

        for error, count in Counter(f"{o.request.dataset}: {o.error}" for o in todo.failures).items():
            stdout.print(f"  cannot start ({count} runs): {error}", highlight=False)
        for path in outside:
            stdout.print(f"  outside {path.relative_to(spec.results_dir)}", highlight=False, markup=False)
        return
    plain = not quiet and not stderr.is_terminal  # nohup, batch jobs: timestamped lines instead of a bar
    log = PlainProgress()
    progress = Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=stderr, disable=quiet or plain, transient=False,
    )
    task = progress.add_task(spec.name, total=len(spec.runs))

    def update(report, running: int) -> None:
        finished = report.skipped + report.done + len(report.failed)
        left = report.total - finished
        progress.update(
            task, completed=finished,
            description=f"{spec.name}: done {report.done} · stored {report.skipped} · running {running} · "
            f"failed {len(report.failed)} · left {left}",
        )

    def announce(event) -> None:
        if plain:
            log.line(run_line(event.kind, event.request, event.seconds, error=event.error))

    executor = SweepExecutor(registry, engine=engine, jobs=jobs, address=address, cpus_per_run=cpus_per_run,
                             gpus_per_run=gpus_per_run, on_update=update, on_event=announce, plain_progress=plain)
    with progress:
        report = executor.run(spec, force=force)
    stdout.print(
        f"{spec.name}: {report.done} done, {report.skipped} already stored, {len(report.failed)} failed "
        f"of {report.total} runs in {report.seconds:.1f} s ({engine}, jobs {jobs}); results in {spec.results_dir}",
        highlight=False,
    )
    for failure in report.failed:
        stdout.print(f"  failed: {failure['run']}: {failure['error']}", highlight=False)
    if report.interrupted:
        stderr.print("interrupted: rerun the same command to resume", highlight=False, markup=False)
        raise typer.Exit(130)
    if report.failed:
        raise typer.Exit(1)


def _write_board_files(board, out: Path, formats: list[str], top: int, curve_bits: Optional[int]) -> list[Path]:
    from cmhbench.leaderboard.plots import all_figures, inline_svg
    from cmhbench.leaderboard.render import to_csv, to_html, to_markdown
    from cmhbench.results.store import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = out / f"leaderboard.{fmt}"
        if fmt == "md":
            atomic_write_text(path, to_markdown(board))
        elif fmt == "csv":
            atomic_write_text(path, to_csv(board))
        else:
            figures = all_figures(board, out / "plots", top=top, curve_bits=curve_bits)
            atomic_write_text(path, to_html(board, {k: inline_svg(v) for k, v in figures.items()}))
        written.append(path)
    return written


@app.command()
@user_errors
def leaderboard(
    results: Path = typer.Option(Path("results"), "--results", help="Result store folder."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only this dataset (default: each stored one)."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="Pick one protocol when results hold several."),
    bits: Optional[str] = typer.Option(None, "--bits", "-b", help="Comma-separated code lengths to show."),
    metric: str = typer.Option("map", "--metric", help="map, map@50, map@500, map_tie_aware, p@100, ..."),
    fmt: str = typer.Option("md", "--format", "-f", help="md, csv or html (comma-separated for several)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write files to OUT (with --dataset) or OUT/<dataset>/ instead of printing."),
    top: int = typer.Option(10, "--top", help="Rows drawn in the plots (html)."),
) -> None:
    """Pivot stored results into the standard table: one row per pipeline, i2t/t2i x bits, mean ± std over seeds."""
    from cmhbench.leaderboard import build_leaderboards
    from cmhbench.leaderboard.render import to_csv, to_markdown

    formats = [f.strip() for f in fmt.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("md", "csv", "html")]
    if bad or not formats:
        raise ConfigError(f"--format must be md, csv or html, got {fmt!r}")
    if "html" in formats and out is None:
        raise ConfigError("--format html writes a page with figures: give --out DIR")
    boards = build_leaderboards(results, dataset=dataset, protocol=protocol, bits=_int_list(bits, "--bits") if bits else None,
                                metric=metric, with_curves=out is not None, registry=_registry())
    for board in boards:
        if out is None:
            for f in formats:
                print(to_markdown(board) if f == "md" else to_csv(board), end="")
            continue
        target = out if dataset else out / board.dataset
        for path in _write_board_files(board, target, formats, top, None):
            stdout.print(f"wrote {path}", highlight=False)


@app.command()
@user_errors
def plot(
    results: Path = typer.Option(Path("results"), "--results", help="Result store folder."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only this dataset (default: each stored one)."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="Pick one protocol when results hold several."),
    metric: str = typer.Option("map", "--metric", help="Metric of the code-length plot."),
    bits: Optional[int] = typer.Option(None, "--bits", "-b", help="Code length of the PR and P@K curves (default: the middle one)."),
    top: int = typer.Option(10, "--top", help="How many of the best rows to draw (upper bounds are always drawn)."),
    out: Path = typer.Option(Path("plots"), "--out", "-o", help="Folder for the PNG and SVG files."),
) -> None:
    """Draw mAP vs code length, precision-recall and precision@K curves from stored results."""
    from cmhbench.leaderboard import build_leaderboards
    from cmhbench.leaderboard.plots import all_figures

    for board in build_leaderboards(results, dataset=dataset, protocol=protocol, metric=metric, with_curves=True,
                                    registry=_registry()):
        if bits is not None and bits not in board.bits:
            raise ConfigError(f"no {board.dataset} results at {bits} bits (stored: {', '.join(map(str, board.bits))})")
        for caption, svg in all_figures(board, out / board.dataset, top=top, curve_bits=bits).items():
            stdout.print(f"{caption}: {svg} (+ .png)", highlight=False)


from cmhbench.cli_data import data_app, features_app  # noqa: E402 - sub-commands register on import

app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")


def main() -> None:
    """Console-script entry point."""
    import sys

    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left before the last buffered lines (``... | head``)
        from cmhbench.cli_support import PIPE_CLOSED_EXIT, silence_stdout

        silence_stdout()
        code = PIPE_CLOSED_EXIT
    sys.exit(code)


if __name__ == "__main__":
    main()
