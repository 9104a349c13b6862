"""The `textitsr` command line: one subcommand per stage of sources -> pairs -> model -> index -> app.

Commands are thin: they parse options and call the library (for search, through
`textitsr.service`). Library errors (`TextITSRError`) become one readable line and exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from textitsr.errors import TextITSRError

app = typer.Typer(
    name="textitsr",
    help="Text <-> bitemporal image-pair retrieval for remote sensing (text-ITSR, ANNEAL).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

SourceKind = Annotated[
    Optional[str],
    typer.Option(
        "--source",
        "--kind",
        help="Source type: levircc, dubaiccd, folder, geotiff, synthetic (detected when omitted).",
    ),
]


# --------------------------------------------------------------------------------------- data
@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="Folder to write the synthetic world into.")],
    seed: Annotated[int, typer.Option(help="World seed; same seed, same world.")] = 7,
) -> None:
    """Write the synthetic georeferenced demo world (GeoTIFF scenes + LEVIR-CC layout dataset)."""
    raise NotImplementedError("demo-data: owned by the data (synthetic) work")


@app.command()
def ingest(
    source: Annotated[Path, typer.Argument(help="Dataset root, GeoTIFF folder, or GeoTIFF files.")],
    out: Annotated[Path, typer.Option(help="Parquet file with one row per pair.")],
    kind: SourceKind = None,
) -> None:
    """Read a source into pairs and write their catalogue (id, split, dates, bounds, CRS, ...)."""
    raise NotImplementedError("ingest: owned by the data (loaders) work")


# -------------------------------------------------------------------------------------- model
@app.command()
def train(
    root: Annotated[Path, typer.Option(help="Dataset root.")],
    out: Annotated[Path, typer.Option(help="Checkpoint folder to write.")],
    source: SourceKind = None,
    fusion: Annotated[str, typer.Option(help="Fusion: a GFF spec, tff, concat-transformer, ...")] = "tff",
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = "auto",
) -> None:
    """Train the text-ITSR model contrastively on (pair, caption) data."""
    raise NotImplementedError("train: owned by the training work")


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint folder.")],
    root: Annotated[Path, typer.Option(help="Dataset root.")],
    source: SourceKind = None,
    split: Annotated[str, typer.Option(help="Split to evaluate on (the whole split is the gallery).")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = "auto",
) -> None:
    """Evaluate text->pair and pair->text retrieval (R@1/5/10, mR, mAP)."""
    raise NotImplementedError("evaluate: owned by the training/evaluation work")


# -------------------------------------------------------------------------------------- index
@app.command()
def index(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint folder.")],
    root: Annotated[Path, typer.Option(help="Dataset root or GeoTIFF folder.")],
    out: Annotated[Path, typer.Option(help="Store folder to write or extend.")],
    source: SourceKind = None,
    scheduler: Annotated[Optional[str], typer.Option(help="Dask scheduler address, e.g. tcp://HOST:8786.")] = None,
) -> None:
    """Embed a source into a searchable archive store."""
    raise NotImplementedError("index: owned by the index work")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Describe the change to look for.")],
    store: Annotated[Path, typer.Option(help="Store folder.")],
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """Search an archive by text and print the best-matching pairs."""
    raise NotImplementedError("search: owned by the index/service work")


# ------------------------------------------------------------------------------------- active
@app.command()
def annotate() -> None:
    """ANNEAL active learning rounds (simulated oracle for benchmarks)."""
    raise NotImplementedError("annotate: owned by the ANNEAL work")


# ---------------------------------------------------------------------------------------- app
@app.command()
def demo() -> None:
    """Prepare the embedded demo (world -> model -> store), then serve the app."""
    raise NotImplementedError("demo: owned by the app work")


def main() -> None:
    """Entry point: library errors become one line on stderr and exit code 1."""
    try:
        app()
    except TextITSRError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
