"""The `textitsr` command line: one subcommand per stage of sources -> pairs -> model -> index -> app.

Commands are thin: they parse options and call the library (for search, through
`textitsr.service`). Library errors (`TextITSRError`) become one readable line and exit code 1.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from textitsr.config import DEMO_SEED
from textitsr.data.registry import SourceOptions
from textitsr.errors import TextITSRError, one_line

app = typer.Typer(
    name="textitsr",
    help="Text <-> bitemporal image-pair retrieval for remote sensing (text-ITSR, ANNEAL).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="Folder to write the synthetic world into.")],
    seed: Annotated[int, typer.Option(min=0, help="World seed; same seed, same world.")] = DEMO_SEED,
    train_pairs: Annotated[int | None, typer.Option(min=1, help="Train pairs [default: demo size].")] = None,
    val_pairs: Annotated[int | None, typer.Option(min=1, help="Val pairs [default: demo size].")] = None,
    test_pairs: Annotated[int | None, typer.Option(min=1, help="Test pairs [default: demo size].")] = None,
) -> None:
    """Write the synthetic georeferenced demo world (GeoTIFF scenes + LEVIR-CC layout dataset)."""
    import dataclasses
    import time

    from textitsr.data.world import summary
    from textitsr.outputs import check_world_out
    from textitsr.synth.world import SyntheticWorldConfig, write_demo_world

    check_world_out(out)

    sizes = {"n_train": train_pairs, "n_val": val_pairs, "n_test": test_pairs}
    config = dataclasses.replace(SyntheticWorldConfig(), **{k: v for k, v in sizes.items() if v is not None})
    start = time.perf_counter()
    root = write_demo_world(out, seed=seed, config=config)
    typer.echo(summary(root, seconds=time.perf_counter() - start))


@app.command("make-training-data")
def make_training_data(
    out: Annotated[Path, typer.Option(help="Folder to write (LEVIR-CC layout); an unfinished run resumes.")],
    shared: Annotated[
        Path | None, typer.Option(help="Shared research data folder [default: ../shared/data].")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed; same seed and inputs, same bytes.")] = 0,
    parts: Annotated[
        str, typer.Option(help="Comma-separated parts: synth, realpairs, timeseries, world.")
    ] = "synth,realpairs,timeseries,world",
) -> None:
    """Generate real-pixel training pairs (change synthesis on real tiles, real pairs, time series, world)."""
    import dataclasses

    from textitsr.config import SHARED_DATA_DIR
    from textitsr.outputs import check_training_data_out
    from textitsr.synth.training_data import TrainingDataRecipe
    from textitsr.synth.training_data import make_training_data as make

    check_training_data_out(out, shared or SHARED_DATA_DIR)
    recipe = dataclasses.replace(TrainingDataRecipe(), seed=seed)
    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    manifest = make(shared or SHARED_DATA_DIR, out, recipe, parts=chosen, echo=typer.echo)
    typer.echo(f"{out}: {manifest['pairs']} pairs {manifest['per_split']}; per type {manifest['per_type']}")


SplitOption = Annotated[str | None, typer.Option(help="Only this split (train, val, test).")]

def _option(kind: Any, text: str, *flags: str) -> Any:
    return Annotated[kind, typer.Option(*flags, help=text)]


#: The options of every command that reads a source (ingest, train, evaluate, index), declared once:
#: name -> (annotation, default). `with_source_options` adds them; data.registry.SourceOptions parses them.
SOURCE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "kind": (_option(str | None, "Source type: levircc, dubaiccd, folder, geotiff, synthetic (detected "
                     "when omitted).", "--source", "--kind"), None),
    "skip_missing": (_option(bool, "LEVIR-CC/Dubai-CCD/folder: leave out pairs whose images are missing."),
                     False),
    "tile_size": (_option(int | None, "GeoTIFF: tile side in px [default 256]."), None),
    "pairing": (_option(str | None, "GeoTIFF: consecutive (default), all, or 'I,J;I,J' (date order); STAC: "
                        "consecutive, all, yearly or season."), None),
    "band_names": (_option(str | None, "Names of the file's bands, e.g. swir1,nir,red,green."), None),
    "bands": (_option(str | None, "GeoTIFF: bands to keep, e.g. red,green,blue."), None),
    "display": (_option(str | None, "Display composite: rgb, false-colour, cir, or three band names."), None),
    "stretch": (_option(str | None, "GeoTIFF scaling per scene: gain (default), percentile, none."), None),
    "max_nodata": (_option(float | None, "GeoTIFF: skip tiles with a larger nodata fraction [default 0.01]."),
                   None),
}
SOURCE_DEFAULTS = SourceOptions()


def with_source_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give `command` the SOURCE_OPTIONS; it receives them as one `options: SourceOptions` argument."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "options"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in SOURCE_OPTIONS.items()
    ]

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        from textitsr.data.registry import SourceOptions

        options = SourceOptions(**{name: kwargs.pop(name) for name in SOURCE_OPTIONS})
        return command(*args, options=options, **kwargs)

    params = own + added
    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


@app.command()
@with_source_options
def ingest(
    source: Annotated[list[Path], typer.Argument(help="Dataset root, GeoTIFF folder, or GeoTIFF files.")],
    out: Annotated[Path, typer.Option(help="Parquet file with one row per pair.")],
    split: SplitOption = None,
    options: SourceOptions = SOURCE_DEFAULTS,
) -> None:
    """Read a source into pairs and write their catalogue (id, split, dates, bounds, CRS, ...)."""
    from textitsr.data.catalog import write_catalog
    from textitsr.outputs import check_catalog_out

    check_catalog_out(out, inputs=source)
    src = options.open(source)
    n = write_catalog(src, out, split=split)
    typer.echo(f"ingested {n} pairs from {src.name} source {', '.join(map(str, source))} -> {out}")


@app.command()
@with_source_options
def train(
    root: Annotated[Path, typer.Option(help="Dataset root.")],
    out: Annotated[Path, typer.Option(help="Checkpoint folder to write (resumable state in OUT/last/).")],
    extra_root: Annotated[
        list[Path] | None,
        typer.Option(help="Also train on this source's train split (repeatable; kind detected)."),
    ] = None,
    fusion: Annotated[
        str | None, typer.Option(help="Fusion: tff, concat-transformer, or a GFF spec (gff:after+diff).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Maximum epochs.")] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, or auto.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=2, help="Pairs per batch.")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Peak learning rate (AdamW).")] = None,
    patience: Annotated[
        int | None, typer.Option(min=1, help="Stop after N epochs without a better mR.")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Folder of backbone feature caches.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last/ if present.")] = False,
    image_encoder: Annotated[str | None, typer.Option(help="Image backbone name, HF id or path.")] = None,
    text_encoder: Annotated[str | None, typer.Option(help="Text backbone name, HF id or path.")] = None,
    unfreeze_image_blocks: Annotated[
        int | None, typer.Option(min=0, help="Fine-tune the image backbone's last N blocks (0: frozen).")
    ] = None,
    options: SourceOptions = SOURCE_DEFAULTS,
) -> None:
    """Train the text-ITSR model contrastively on (pair, caption) data."""
    from textitsr.outputs import check_checkpoint_out
    from textitsr.training.train import TrainConfig
    from textitsr.training.train import train as run_training

    check_checkpoint_out(out, inputs=[root, *(extra_root or [])])
    kind, source_options = options.resolve(root)
    given = {"fusion": fusion, "epochs": epochs, "seed": seed, "device": device,
             "batch_size": batch_size, "lr": lr, "patience": patience, "cache_dir": cache_dir}
    settings = {k: v for k, v in given.items() if v is not None}  # unset -> TrainConfig's defaults
    backbones = {"image_encoder": image_encoder, "text_encoder": text_encoder,
                 "unfreeze_image_blocks": unfreeze_image_blocks}
    model_options = {k: v for k, v in backbones.items() if v is not None}  # unset -> ModelConfig's
    config = TrainConfig(root=root, out=out, source=kind, source_options=source_options, resume=resume,
                         model_options=model_options, extra_roots=list(extra_root or []), **settings)
    result = run_training(config)
    typer.echo(
        f"best val mR {result.best_val_mR:.2f} (epoch {result.best_epoch}/{result.epochs_run}, "
        f"{result.train_seconds:.0f}s) -> {result.checkpoint}"
    )


@app.command("train-default")
def train_default(
    out: Annotated[Path, typer.Option(help="Checkpoint folder (shipped: textitsr/assets/default_model).")],
    shared: Annotated[
        Path | None, typer.Option(help="Shared research data folder [default: ../shared/data].")
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, help="Training seed (the generated data keep the recipe's seed).")
    ] = 0,
    data_dir: Annotated[
        Path | None, typer.Option(help="Generated data folder [default: data/cache/realtrain].")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Folder of backbone feature caches.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run of this seed.")] = False,
    pool: Annotated[
        list[Path] | None,
        typer.Option(help="More real labelled pairs folders (realdev layout with a source per pair)."),
    ] = None,
) -> None:
    """Reproduce the shipped default model: make-training-data, then train with the default recipe."""
    import dataclasses

    from textitsr.config import SHARED_DATA_DIR
    from textitsr.training.default_model import DEFAULT_DATA_DIR, DefaultRecipe
    from textitsr.training.default_model import train_default as run

    recipe = dataclasses.replace(DefaultRecipe(), seed=seed)
    extra = run(shared or SHARED_DATA_DIR, out, recipe, data_dir=data_dir or DEFAULT_DATA_DIR,
                cache_dir=cache_dir, resume=resume, extra_pools=tuple(pool or ()))
    typer.echo(f"{out}: recipe {extra['recipe_fingerprint']}, data {extra['data']['content_sha256']}, "
               f"best val mR {extra['best_val_mR']:.2f}")


@app.command()
@with_source_options
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint folder.")],
    root: Annotated[Path, typer.Option(help="Dataset root.")],
    split: Annotated[str, typer.Option(help="Split to evaluate (the whole split is the gallery).")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = "auto",
    cache_dir: Annotated[Path | None, typer.Option(help="Folder of backbone feature caches.")] = None,
    options: SourceOptions = SOURCE_DEFAULTS,
) -> None:
    """Evaluate text->pair and pair->text retrieval (R@1/5/10, mR, mAP) over the whole split."""
    import json

    from textitsr.evaluation.evaluate import evaluate_checkpoint, format_metrics

    extra = {"cache_dir": cache_dir} if cache_dir is not None else {}
    source = options.open(root)
    metrics = evaluate_checkpoint(checkpoint, source, split, device, progress=not as_json, **extra)
    typer.echo(json.dumps(metrics) if as_json else format_metrics(metrics))


@app.command()
@with_source_options
def index(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint folder.")],
    out: Annotated[Path, typer.Option(help="Store folder to write or extend.")],
    root: Annotated[
        list[Path] | None, typer.Option(help="Dataset root, GeoTIFF folder or GeoTIFF files (repeat --root).")
    ] = None,
    stac: Annotated[
        str | None, typer.Option(help="Instead of --root: a STAC catalog (path or URL) or STAC API URL.")
    ] = None,
    collection: Annotated[str | None, typer.Option(help="STAC: only this collection.")] = None,
    bbox: Annotated[str | None, typer.Option(help="STAC: only items within W,S,E,N (degrees).")] = None,
    datetime: Annotated[str | None, typer.Option(help="STAC: only items dated A/B (ISO, '..' open).")] = None,
    assets: Annotated[
        str | None, typer.Option(help="STAC: assets to read: red,green,blue or visual [default: visual].")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address, e.g. tcp://HOST:8786.")
    ] = None,
    split: SplitOption = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Pairs per encoder batch.")] = None,
    shard_size: Annotated[
        int | None, typer.Option(min=1, help="Pairs per shard (unit of resume and of Dask work).")
    ] = None,
    feature_cache: Annotated[
        Path | None, typer.Option(help="Reuse the training feature cache in this folder (local builds).")
    ] = None,
    precision: Annotated[
        str,
        typer.Option(help="Backbone precision: auto (bf16 where the CPU/GPU has it and a probe stays "
                     "within cosine 0.99 of fp32), fp32 or bf16."),
    ] = "auto",
    backbone_runtime: Annotated[
        str,
        typer.Option(help="What fp32 CPU builds run the image backbone on: auto (ONNX Runtime when its "
                     "probe matches PyTorch, else TorchScript), onnx, torchscript or eager."),
    ] = "auto",
    device: Annotated[
        str, typer.Option(help="cpu, cuda (cuda:N), or auto (the GPU when there is one).")
    ] = "cpu",
    archive_change_weight: Annotated[
        float | None,
        typer.Option(min=0.0, help="How far a pair's pixel change against the pairs indexed with it moves "
                     "the model's reading of whether it changed (default 4). A folder's pairs.jsonl may name "
                     "each pair's sensor ('source'); otherwise index each sensor with its own call, "
                     "or use 0 (each pair on its own) for a folder that mixes many sensors."),
    ] = None,
    options: SourceOptions = SOURCE_DEFAULTS,
) -> None:
    """Embed a source into a searchable archive store (resumes; appends new sources as new shards)."""
    from textitsr.embedding.encode import resolve_device
    from textitsr.errors import InputError
    from textitsr.index.archive import Archive
    from textitsr.index.build import BuildConfig
    from textitsr.outputs import check_store_out

    device = str(resolve_device(device))  # an unknown or absent device fails before any work
    if (stac is None) == (not root):
        raise InputError("--root or --stac: expected exactly one source to index")
    check_store_out(out, inputs=root or ([Path(stac)] if Path(stac).exists() else []))
    if stac is not None:
        pairs = options.open_stac(stac, collection, bbox, datetime, assets)
    else:
        pairs = options.open(root)
    overrides = {"batch_size": batch_size, "shard_size": shard_size, "feature_cache": feature_cache,
                 "precision": precision, "backbone_runtime": backbone_runtime, "device": device,
                 "archive_change_weight": archive_change_weight}
    config = BuildConfig(**{name: value for name, value in overrides.items() if value is not None})
    store = Archive(out, checkpoint).build(pairs, split=split, scheduler=scheduler, config=config)
    from textitsr.embedding.query_graph import prepare_query_graph
    from textitsr.models.text_side import load_text_side

    prepare_query_graph(load_text_side(checkpoint), store.checkpoint_id)  # one-shot searches skip torch
    typer.echo(f"{out}: {len(store)} pairs in {len(store.shard_names)} shard(s), "
               f"{store.manifest['n_captions']} captions, model {store.checkpoint_id}")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Describe the change to look for.")],
    store: Annotated[Path, typer.Option(help="Store folder.")],
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint folder (default: the one the store was built with).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler whose workers search the shards, e.g. tcp://HOST:8786.")
    ] = None,
) -> None:
    """Search an archive by text and print the best-matching pairs.

    When `textitsr api` is serving this store, the query is sent there (no model to load); else the
    store's model's exported query graph answers (ONNX Runtime, no torch); else the text encoder and
    text head are loaded, and the query graph is exported for the next search.
    """
    import json
    import os

    from textitsr.api_discovery import TOKEN_ENV, running_api
    from textitsr.api_discovery import search_text as api_search_text

    own_model = scheduler is None and checkpoint is None
    url = running_api(store) if own_model else None
    service = None
    # None from the server (a refused token, an error, an answer of the wrong shape): search here.
    hits = api_search_text(url, query, k, os.environ.get(TOKEN_ENV)) if url is not None else None
    if hits is None:
        from dataclasses import asdict

        from textitsr.service import SearchService

        graph = SearchService.open_query_graph(store) if own_model else None
        # One query: setting up ONNX Runtime (export check, session, probe) costs more than it saves.
        service = graph or SearchService.open(
            store, checkpoint, scheduler=scheduler, text_only=True, text_backend="torch"
        )
        hits = [asdict(h) for h in service.search_text(query, k=k)]
        if graph is not None or not own_model:
            service = None  # nothing to prepare for the next search
    if as_json:
        rows = [{"rank": h["rank"], "score": round(h["score"], 6), "pair_id": h["pair_id"],
                 "bounds": list(h["bounds"]) if h["bounds"] else None, "dates": list(h["dates"]),
                 "source": h["source"]} for h in hits]
        typer.echo(json.dumps(rows, indent=1))
    else:
        _print_hits(query, hits)
    if service is not None:  # after the answer: the next one-shot search needs no torch
        from textitsr.embedding.query_graph import prepare_query_graph

        prepare_query_graph(service.model, service.store.checkpoint_id)


def _print_hits(query: str, hits: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(hits)} best matches for {query.strip()[:80]!r}")
    for col, justify in (("rank", "right"), ("score", "right"), ("pair id", "left"),
                         ("place (lon, lat)", "left"), ("dates", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for h in hits:
        place, bounds = "-", h["bounds"]
        if bounds:
            place = f"{(bounds[0] + bounds[2]) / 2:.5f}, {(bounds[1] + bounds[3]) / 2:.5f}"
        dates = " -> ".join(d or "?" for d in h["dates"]) if any(h["dates"]) else "-"
        table.add_row(str(h["rank"]), f"{h['score']:.3f}", h["pair_id"], place, dates)
    Console().print(table)


@app.command()
def export(
    store: Annotated[Path, typer.Argument(help="Store folder to export.")],
    out: Annotated[Path, typer.Argument(help="GeoParquet file to write (.parquet).")],
    embeddings: Annotated[bool, typer.Option("--embeddings", help="Add each pair's embedding.")] = False,
    query: Annotated[
        str | None, typer.Option(help="Export only this text query's best matches, with rank and score.")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of matches of --query.")] = 100,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint for --query (default: the one the store was built with).")
    ] = None,
) -> None:
    """Write the archive's pairs (footprints, dates, source, captions) as GeoParquet for geopandas,
    DuckDB or QGIS."""
    from textitsr.index.export import Selection, export_geoparquet
    from textitsr.index.store import Store

    opened = Store.open(store)
    selection = None
    if query is not None:
        from textitsr.service import SearchService

        graph = SearchService.open_query_graph(store) if checkpoint is None else None
        service = graph or SearchService.open(store, checkpoint, text_only=True, text_backend="torch")
        hits = service.search_text(query, k=k)
        selection = Selection([h.pair_id for h in hits], [h.score for h in hits], query)
    n = export_geoparquet(opened, out, embeddings=embeddings, selection=selection)
    typer.echo(f"{out}: {n} pairs of {store}" + (f" matching {query.strip()[:80]!r}" if query else ""))


@app.command()
def check(store: Annotated[Path, typer.Argument(help="Store folder to check.")]) -> None:
    """Read a whole store and print everything wrong with it, one line each (exit 1 when anything is)."""
    from textitsr.index.integrity import check_store
    from textitsr.index.store import Store

    problems = check_store(store)
    for line in problems:
        typer.echo(f"error: {line}", err=True)
    if problems:
        raise typer.Exit(1)
    opened = Store.open(store)
    typer.echo(f"{store}: ok, {len(opened)} pairs in {len(opened.shard_names)} shard(s), "
               f"{opened.manifest.get('n_captions', 0)} captions, model {opened.checkpoint_id}")


@app.command()
def annotate(
    store: Annotated[Path, typer.Option(help="Store folder whose pairs are annotated (never modified).")],
    out: Annotated[Path, typer.Option(help="Workspace: annotation log, checkpoints, re-embedded store.")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="Base checkpoint (default: the store's).")
    ] = None,
    strategy: Annotated[str, typer.Option(help="mgue, bcgue (clustered), uncertainty, random.")] = "mgue",
    batch: Annotated[int, typer.Option(min=1, help="Item pairs asked per round.")] = 10,
    rounds: Annotated[
        int, typer.Option(min=1, help="Rounds to run (a half-answered round resumes first).")
    ] = 1,
    budget: Annotated[int | None, typer.Option(min=1, help="Stop at this many labels in total.")] = None,
    oracle: Annotated[str, typer.Option(help="'simulated': same change type = similar.")] = "simulated",
    root: Annotated[
        Path | None,
        typer.Option("--root", "--world", help="Dataset root with change types (default: the store's)."),
    ] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Fine-tuning steps per update.")] = None,
    no_update: Annotated[bool, typer.Option("--no-update", help="Label only; no fine-tuning.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per round.")] = False,
) -> None:
    """ANNEAL active learning rounds: select informative pairs, label them, fine-tune, re-embed."""
    import dataclasses
    import json

    from textitsr.active.anneal import SelectionConfig
    from textitsr.active.finetune import FinetuneConfig
    from textitsr.active.oracle import SimulatedOracle
    from textitsr.active.rounds import AnnealSession, simulated_rounds
    from textitsr.errors import InputError
    from textitsr.outputs import check_workspace_out

    check_workspace_out(out, store)
    if oracle != "simulated":
        raise InputError(f"--oracle: only 'simulated' answers from the command line, got {oracle!r}; "
                         "annotate by hand on the Annotate page")
    ft = FinetuneConfig() if steps is None else dataclasses.replace(FinetuneConfig(), steps=steps)
    session = AnnealSession(store, out, checkpoint, SelectionConfig(strategy=strategy, batch=batch), ft)
    if root is not None:
        from textitsr.data.registry import open_source

        answer = SimulatedOracle.from_source(open_source(root))
    else:
        answer = SimulatedOracle(dict(zip(session.ids, session.change_types, strict=True)))

    def report(row: dict) -> None:
        if as_json:
            typer.echo(json.dumps(row))
        else:
            extra = "  ".join(f"{k} {v:.2f}" for k, v in row.items() if isinstance(v, float))
            typer.echo(f"round {row['round']}: asked {row['asked']}, similar {row['similar']}, "
                       f"labels {row['labels']}  {extra}")

    if not as_json:
        base = session.baseline_metrics()
        typer.echo("base: " + "  ".join(f"{k} {v:.2f}" for k, v in base.items() if k != "n_labels"))
    simulated_rounds(session, answer, rounds, budget, update=not no_update, report=report)
    if not as_json:
        typer.echo(f"log: {session.paths.log}" + ("" if no_update else f"  store: {session.paths.store}"))


@app.command()
def demo(
    root: Annotated[Path | None, typer.Option(help="Demo artifacts folder (default data/demo).")] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the app.")] = 8501,
    address: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps it local.")] = "127.0.0.1",
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Training epochs (default: DEMO_EPOCHS in textitsr/demo.py).")
    ] = None,
    prepare_only: Annotated[
        bool, typer.Option("--prepare-only", help="Build the artifacts, do not serve.")
    ] = False,
) -> None:
    """Prepare the embedded demo (world -> model -> store; cached steps are skipped), then serve the app."""
    from textitsr.config import DemoPaths
    from textitsr.demo import prepare_demo, serve_app

    paths = DemoPaths(root) if root is not None else DemoPaths()
    prepare_demo(paths, epochs=epochs)
    if not prepare_only:
        raise typer.Exit(serve_app(paths.store, paths.checkpoint, address=address, port=port))


@app.command()
def serve(
    store: Annotated[Path, typer.Option(help="Store folder to search.")],
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: the store's).")] = None,
    data_root: Annotated[
        list[Path] | None, typer.Option(help="Folder typed scene paths and uploads may use (repeatable).")
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the app.")] = 8501,
    address: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps it local.")] = "127.0.0.1",
) -> None:
    """Serve the app on an existing store (e.g. one built from LEVIR-CC or a GeoTIFF series)."""
    from textitsr.demo import serve_app
    from textitsr.index.store import read_manifest

    read_manifest(store)  # a clear error now rather than in the browser
    raise typer.Exit(serve_app(store, checkpoint, data_root or (), address=address, port=port))


@app.command()
def api(
    store: Annotated[Path, typer.Option(help="Store folder to serve.")],
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: the store's).")] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
    token: Annotated[
        str | None, typer.Option(help="Bearer token clients must send (default: $TEXTITSR_API_TOKEN).")
    ] = None,
) -> None:
    """Serve the archive as an HTTP/JSON API (OpenAPI docs at /docs)."""
    from textitsr.api import ApiConfig, serve_api

    serve_api(store, checkpoint, ApiConfig(host=host, port=port, token=token))


def main() -> None:
    """Entry point: library errors, and failures of the file system (a full disk, a permission, a
    symlink loop), become one line on stderr and exit code 1."""
    try:
        app()
    except (TextITSRError, OSError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
