"""The embedded demo, one command from a fresh clone: synthetic world + real scenes -> model -> store.

The model is the shipped default (`textitsr/assets/default_model`, trained on real-pixel data by
`textitsr train-default`), copied into the demo folder, so the first run trains nothing; only when
it is missing does the demo fall back to training on the world. The store holds the procedural
world and the real NAIP and Landsat series shipped in `data/real-scenes` (`data/real_scenes.py`).
Each step is skipped when its artifact already exists and is valid (re-runs take seconds), so
`textitsr demo` can be run again and again; a broken or stale artifact is rebuilt. `serve_app`
starts the Streamlit app on an archive (bound to 127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from textitsr.config import DEMO_SEED, REPO_ROOT, DemoPaths
from textitsr.errors import CheckpointError, TextITSRError

Echo = Callable[[str], None]

#: The fallback model when no shipped default is present: the best global-feature fusion of
#: benchmarks/results/accuracy.md, trained on the world (token fusions would take minutes per epoch).
DEMO_FUSION = "gff:concat+absdiff"
#: Max epochs (early stopping on val mR still applies); GFF's val mR levels off by ~10-18 epochs.
DEMO_EPOCHS = 20


@dataclass(frozen=True)
class DemoResult:
    """What `prepare_demo` did: the artifact paths and which steps were (re)built."""

    paths: DemoPaths
    built: tuple[str, ...]
    seconds: float


def _world_ok(world: Path) -> int:
    """Number of pairs in a readable synthetic world (0 when absent or unreadable)."""
    from textitsr.data.world import SyntheticSource

    try:
        return len(SyntheticSource(world))
    except TextITSRError:
        return 0


def _checkpoint_id(folder: Path) -> str | None:
    """The checkpoint's id when this code can load it (a checkpoint of an older model version is
    stale), else None. Loaded uncached, so a retrained checkpoint is never shadowed."""
    from textitsr.models.checkpoint import checkpoint_id, load_checkpoint

    if not folder.is_dir():
        return None
    try:
        load_checkpoint(folder)
        return checkpoint_id(folder)
    except (TextITSRError, OSError, KeyError, ValueError, RuntimeError):
        return None


def _store_pairs(store: Path, cid: str) -> int | None:
    """Pairs in a valid store built with checkpoint `cid` as a build reads pairs now; None when absent,
    invalid, another model's, or built before each pair was read against its archive."""
    from textitsr.index.build import BuildConfig
    from textitsr.index.store import Store

    try:
        opened = Store.open(store, checkpoint_id=cid)
        opened.validate()
    except (TextITSRError, OSError):
        return None
    weight = BuildConfig().archive_change_weight
    if any(shard.get("archive_change_weight") != weight for shard in opened.manifest["shards"]):
        return None
    return len(opened)


def prepare_demo(
    paths: DemoPaths | None = None,
    *,
    seed: int = DEMO_SEED,
    epochs: int | None = None,
    world_config: object | None = None,
    real_scenes: bool = True,
    default_model: Path | None = None,
    echo: Echo = print,
) -> DemoResult:
    """Make sure the demo world, checkpoint and store exist and agree; build what is missing.

    `real_scenes`: also index the shipped real series; `default_model`: the checkpoint copied in as
    the demo model (None: the shipped default; training on the world when it is not there).
    `epochs` overrides DEMO_EPOCHS for that fallback; `world_config` a SyntheticWorldConfig.
    Backbone features are cached under the demo root, so deleting the root starts from nothing.
    Every artifact is written atomically by its own layer.
    """
    from textitsr.outputs import check_demo_out

    paths = paths or DemoPaths()
    check_demo_out(paths.root)
    started = time.perf_counter()
    run = _DemoRun(paths, echo)
    n_world = _ensure_world(run, seed, world_config)
    cid = _ensure_model(run, default_model, epochs)
    _ensure_store(run, cid, n_world, real_scenes)
    _ensure_tiles(run)
    seconds = time.perf_counter() - started
    done = f"built: {', '.join(run.built)}" if run.built else "nothing to build"
    echo(f"[demo] ready in {seconds:.0f} s ({done})")
    return DemoResult(paths, tuple(run.built), seconds)


@dataclass
class _DemoRun:
    """What the demo steps share: where the artifacts go, how to report, what was (re)built."""

    paths: DemoPaths
    echo: Echo
    built: list[str] = field(default_factory=list)

    def step(self, name: str) -> float:
        self.echo(f"[demo] {name} ...")
        return time.perf_counter()


def _ensure_world(run: _DemoRun, seed: int, world_config: object | None) -> int:
    """1. The synthetic world (generated when absent or unreadable); returns its pair count."""
    world = run.paths.world
    n_world = _world_ok(world)
    if n_world:
        run.echo(f"[demo] world: {n_world} pairs at {world} (kept)")
        return n_world
    from textitsr.synth.world import write_demo_world

    t0 = run.step(f"world: generating the synthetic georeferenced world into {world}")
    write_demo_world(world, seed=seed, config=world_config)  # type: ignore[arg-type]
    n_world = _world_ok(world)
    run.echo(f"[demo] world: {n_world} pairs in {time.perf_counter() - t0:.0f} s")
    run.built.append("world")
    return n_world


def _made_by_recipe(folder: Path) -> bool:
    """Whether a checkpoint is a copy of a shipped default (`train-default` records its recipe), not
    a model trained on the world."""
    from textitsr.models.checkpoint import read_checkpoint_config
    from textitsr.training.default_model import RECIPE_KEY

    try:
        return RECIPE_KEY in (read_checkpoint_config(folder).get("extra") or {})
    except (TextITSRError, OSError):
        return False


def _ensure_model(run: _DemoRun, default_model: Path | None, epochs: int | None) -> str:
    """2. The model: the shipped default copied in (again when the shipped default changed), else
    trained on the world (retrained with a new world); returns its checkpoint id."""
    from textitsr.training.default_model import DEFAULT_MODEL_DIR

    paths = run.paths
    default_model = DEFAULT_MODEL_DIR if default_model is None else Path(default_model)
    shipped = _checkpoint_id(default_model)
    cid = None if "world" in run.built and not shipped else _checkpoint_id(paths.checkpoint)
    if cid and shipped and cid != shipped and _made_by_recipe(paths.checkpoint):
        run.echo(f"[demo] model: {paths.checkpoint} is an earlier shipped default; taking the current one")
        cid = None
    if cid:
        run.echo(f"[demo] model: checkpoint {cid} at {paths.checkpoint} (kept)")
        return cid
    if shipped:
        import shutil

        from textitsr.atomic import atomic_dir

        with atomic_dir(paths.checkpoint) as tmp:
            for item in default_model.iterdir():
                if item.is_file():
                    shutil.copy2(item, tmp / item.name)
        cid = _checkpoint_id(paths.checkpoint)
        run.echo(f"[demo] model: shipped default {cid} copied to {paths.checkpoint}")
    else:
        from textitsr.training.train import TrainConfig, train

        t0 = run.step(f"model: training the default model on the world's train split into {paths.checkpoint}")
        config = TrainConfig(root=paths.world, out=paths.checkpoint, source="synthetic", fusion=DEMO_FUSION,
                             epochs=epochs if epochs is not None else DEMO_EPOCHS,
                             cache_dir=paths.root / "cache")
        result = train(config)
        cid = _checkpoint_id(paths.checkpoint)
        run.echo(f"[demo] model: {result.epochs_run} epochs, best val mR {result.best_val_mR:.1f} "
                 f"in {time.perf_counter() - t0:.0f} s")
    run.built.append("model")
    if cid is None:
        raise CheckpointError(f"{paths.checkpoint}: training finished but the checkpoint cannot be loaded")
    return cid


def _ensure_store(run: _DemoRun, cid: str, n_world: int, real_scenes: bool) -> None:
    """3. The store: world + real series, with their map tiles (resumed when partial; rebuilt for
    another model or when broken)."""
    paths = run.paths
    real = []
    if real_scenes:
        from textitsr.data.real_scenes import series_sources

        real = series_sources()
    n_expected = n_world + sum(len(src) for src in real)
    n_store = _store_pairs(paths.store, cid)
    if n_store == n_expected and "model" not in run.built:
        run.echo(f"[demo] store: {n_store} pairs at {paths.store} (kept)")
        return
    import shutil

    from textitsr.data.world import SyntheticSource
    from textitsr.index.archive import Archive
    from textitsr.outputs import check_store_out

    if n_store is None and paths.store.exists():
        check_store_out(paths.store, what="demo store")  # delete only what we wrote
        run.echo(f"[demo] store: {paths.store} is stale or unreadable; rebuilding it")
        shutil.rmtree(paths.store)
    t0 = run.step(f"store: embedding {n_world} world + {n_expected - n_world} real pairs into {paths.store}")
    archive = Archive(paths.store, paths.checkpoint)
    for src in [SyntheticSource(paths.world), *real]:
        store = archive.build(src, progress=True)
    run.echo(f"[demo] store: {len(store)} pairs in {time.perf_counter() - t0:.0f} s")
    run.built.append("store")


def _ensure_tiles(run: _DemoRun) -> None:
    """4. Map tiles of scenes that have none (a store built before tiles existed)."""
    from textitsr.index.archive import Archive
    from textitsr.index.store import Store
    from textitsr.index.tiles import TileIndex, store_scene_paths

    store = Store.open(run.paths.store)
    index = TileIndex.read(store.tiles_dir)
    if all(str(p) in index.paths for p in store_scene_paths(store)):
        run.echo(f"[demo] tiles: {len(index.scenes)} scene pyramids at {store.tiles_dir} (kept)")
        return
    t0 = run.step(f"tiles: map tiles of the world's scenes into {store.tiles_dir}")
    index = Archive(run.paths.store).tile_missing()
    n_tiles = sum(t.n_tiles for t in index.scenes.values())
    took = time.perf_counter() - t0
    run.echo(f"[demo] tiles: {len(index.scenes)} scenes, {n_tiles:,} tiles in {took:.0f} s")
    run.built.append("tiles")


# ------------------------------------------------------------------------------------ serving
APP_FILE = REPO_ROOT / "app.py"


def app_environment(
    store: Path, checkpoint: Path | None = None, data_roots: Sequence[Path] = (), base: dict | None = None
) -> dict[str, str]:
    """Environment for the app process: the TEXTITSR_* settings textitsr.app.config reads, offline hubs."""
    from textitsr.app.config import ENV_CHECKPOINT, ENV_DATA_ROOTS, ENV_STORE

    env = dict(os.environ if base is None else base)
    env[ENV_STORE] = str(Path(store).resolve())
    if checkpoint is not None:
        env[ENV_CHECKPOINT] = str(Path(checkpoint).resolve())
    if data_roots:
        env[ENV_DATA_ROOTS] = os.pathsep.join(str(Path(r).resolve()) for r in data_roots)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def streamlit_command(address: str = "127.0.0.1", port: int = 8501) -> list[str]:
    """`python -m streamlit run app.py` with the bind address and port (other settings: .streamlit/)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_FILE),
        "--server.address", address, "--server.port", str(port),
    ]


def serve_app(
    store: Path,
    checkpoint: Path | None = None,
    data_roots: Sequence[Path] = (),
    address: str = "127.0.0.1",
    port: int = 8501,
    echo: Echo = print,
) -> int:
    """Run the Streamlit app in the foreground until interrupted; returns its exit code."""
    echo(f"[app] serving {store} at http://{'localhost' if address == '127.0.0.1' else address}:{port}")
    try:
        return subprocess.run(
            streamlit_command(address, port), cwd=REPO_ROOT,
            env=app_environment(store, checkpoint, data_roots),
        ).returncode
    except KeyboardInterrupt:
        return 0
