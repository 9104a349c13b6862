"""Leaflet & co. served from the app itself, so the map works without internet.

folium and its plugins reference CDN URLs; the set-up (`make assets` -> `python -m
textitsr.app.map_assets`) installs the same libraries from npm (package.json / package-lock.json) and
copies the files the map needs into static/vendor/ (git-ignored; never committed). At app start
`use_local_map_assets()` repoints folium's URLs to /app/static/vendor/... (Streamlit static
serving). This module is the one home of that CDN -> local file manifest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from textitsr.atomic import atomic_write_text
from textitsr.config import REPO_ROOT
from textitsr.errors import InputError

VENDOR_DIR = REPO_ROOT / "static" / "vendor"
NODE_MODULES = REPO_ROOT / "node_modules"
STAMP = VENDOR_DIR / ".installed.json"
#: URL prefix under which Streamlit serves ./static (server.enableStaticServing).
STATIC_URL = "/app/static/vendor"


@dataclass(frozen=True)
class VendorAsset:
    """Files of one npm package copied into static/vendor/<dest>/ (directories copied whole)."""

    package: str
    dest: str
    files: tuple[str, ...]
    dirs: tuple[str, ...] = ()
    #: CDN URL (as folium / its plugins reference it) -> file name under dest.
    replaces: dict[str, str] = field(default_factory=dict)


_JSD = "https://cdn.jsdelivr.net"
_CDNJS = "https://cdnjs.cloudflare.com/ajax/libs"
_AWESOME = f"{_CDNJS}/Leaflet.awesome-markers/2.0.2/leaflet.awesome-markers"

VENDOR_ASSETS: tuple[VendorAsset, ...] = (
    VendorAsset(
        "leaflet", "leaflet", ("dist/leaflet.js", "dist/leaflet.css"), ("dist/images",),
        {f"{_JSD}/npm/leaflet@1.9.3/dist/leaflet.js": "leaflet.js",
         f"{_JSD}/npm/leaflet@1.9.3/dist/leaflet.css": "leaflet.css"},
    ),
    VendorAsset(
        "leaflet-draw", "leaflet-draw", ("dist/leaflet.draw.js", "dist/leaflet.draw.css"), ("dist/images",),
        {f"{_CDNJS}/leaflet.draw/1.0.2/leaflet.draw.js": "leaflet.draw.js",
         f"{_CDNJS}/leaflet.draw/1.0.2/leaflet.draw.css": "leaflet.draw.css"},
    ),
    VendorAsset(
        "jquery", "jquery", ("dist/jquery.min.js",), (),
        {"https://code.jquery.com/jquery-3.7.1.min.js": "jquery.min.js"},
    ),
    VendorAsset(
        "bootstrap", "bootstrap", ("dist/js/bootstrap.bundle.min.js", "dist/css/bootstrap.min.css"), (),
        {f"{_JSD}/npm/bootstrap@5.2.2/dist/js/bootstrap.bundle.min.js": "bootstrap.bundle.min.js",
         f"{_JSD}/npm/bootstrap@5.2.2/dist/css/bootstrap.min.css": "bootstrap.min.css"},
    ),
    VendorAsset(
        "leaflet.awesome-markers", "awesome-markers",
        ("dist/leaflet.awesome-markers.js", "dist/leaflet.awesome-markers.css"), ("dist/images",),
        {f"{_AWESOME}.js": "leaflet.awesome-markers.js", f"{_AWESOME}.css": "leaflet.awesome-markers.css"},
    ),
    VendorAsset(
        "@fortawesome/fontawesome-free", "fontawesome", ("css/all.min.css",), ("webfonts",),
        {f"{_JSD}/npm/@fortawesome/fontawesome-free@6.2.0/css/all.min.css": "all.min.css"},
    ),
    VendorAsset(
        "leaflet.fullscreen", "leaflet.fullscreen",
        ("Control.FullScreen.js", "Control.FullScreen.css", "icon-fullscreen.svg"), (),
        {f"{_JSD}/npm/leaflet.fullscreen@3.0.0/Control.FullScreen.min.js": "Control.FullScreen.js",
         f"{_JSD}/npm/leaflet.fullscreen@3.0.0/Control.FullScreen.css": "Control.FullScreen.css"},
    ),
    VendorAsset(
        "leaflet-mouse-position", "leaflet-mouse-position",
        ("src/L.Control.MousePosition.js", "src/L.Control.MousePosition.css"), (),
        {f"{_JSD}/gh/ardhi/Leaflet.MousePosition/src/L.Control.MousePosition.min.js":
             "L.Control.MousePosition.js",
         f"{_JSD}/gh/ardhi/Leaflet.MousePosition/src/L.Control.MousePosition.min.css":
             "L.Control.MousePosition.css"},
    ),
)

#: Stylesheets folium links that the app does not need and no npm package ships.
DROPPED_CDN_URLS = frozenset({
    "https://netdna.bootstrapcdn.com/bootstrap/3.0.0/css/bootstrap-glyphicons.css",
    f"{_JSD}/gh/python-visualization/folium/folium/templates/leaflet.awesome.rotate.min.css",
})


def _dest_file(asset: VendorAsset, rel: str) -> str:
    """Where a vendored file lands: dest/<basename> (fontawesome keeps css/ beside webfonts/)."""
    return f"css/{rel}" if asset.package == "@fortawesome/fontawesome-free" else rel


def vendor_url_map(prefix: str = STATIC_URL) -> dict[str, str]:
    """CDN URL -> local URL under the app's static serving."""
    return {cdn: f"{prefix}/{a.dest}/{_dest_file(a, rel)}"
            for a in VENDOR_ASSETS for cdn, rel in a.replaces.items()}


def missing_vendor_files(vendor_dir: Path = VENDOR_DIR) -> list[Path]:
    """Vendored files the map needs that are not installed (empty: all there)."""
    wanted = [vendor_dir / a.dest / _dest_file(a, rel) for a in VENDOR_ASSETS for rel in a.replaces.values()]
    return [p for p in wanted if not p.is_file()]


def _rewrite(entries: Sequence[tuple[str, str]], mapping: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(name, mapping.get(url, url)) for name, url in entries if url not in DROPPED_CDN_URLS]


def use_local_map_assets(prefix: str = STATIC_URL, vendor_dir: Path = VENDOR_DIR) -> bool:
    """Point folium's and its plugins' CDN URLs at the vendored copies; idempotent.

    Returns False (and changes nothing) when vendored files are missing, so the map can still
    load from the CDNs when online; the map page warns in that case.
    """
    if missing_vendor_files(vendor_dir):
        return False
    import folium
    import folium.folium
    from branca.element import MacroElement
    from folium import plugins

    mapping = vendor_url_map(prefix)
    classes: set[type] = {folium.Map}
    for name in dir(plugins):
        obj = getattr(plugins, name)
        if isinstance(obj, type) and issubclass(obj, MacroElement):
            classes.add(obj)
    for cls in classes:
        for attr in ("default_js", "default_css"):
            entries = cls.__dict__.get(attr)
            if entries:
                setattr(cls, attr, _rewrite(entries, mapping))
    folium.folium._default_js[:] = _rewrite(folium.folium._default_js, mapping)
    folium.folium._default_css[:] = _rewrite(folium.folium._default_css, mapping)
    return True


# ---------------------------------------------------------------------------------- set-up
def _lock_fingerprint(repo: Path) -> str:
    lock = repo / "package-lock.json"
    if not lock.is_file():
        raise InputError(f"{lock}: missing; expected the npm lock file of the map assets")
    return lock.read_text(encoding="utf-8")


def install(repo: Path = REPO_ROOT, force: bool = False) -> bool:
    """npm ci (scripts disabled) + copy the manifest's files into static/vendor/; skipped when current.

    Returns True when something was (re)installed. Idempotent: a stamp records the lock file and
    the manifest it was built from.
    """
    vendor, stamp = repo / "static" / "vendor", repo / "static" / "vendor" / ".installed.json"
    wanted = {"lock": _lock_fingerprint(repo), "assets": [repr(a) for a in VENDOR_ASSETS]}
    if not force and stamp.is_file() and not missing_vendor_files(vendor):
        try:
            if json.loads(stamp.read_text(encoding="utf-8")) == wanted:
                return False
        except json.JSONDecodeError:
            pass
    node_modules = repo / "node_modules"
    installed_lock = node_modules / ".package-lock.json"
    lock_mtime = (repo / "package-lock.json").stat().st_mtime
    if force or not installed_lock.is_file() or installed_lock.stat().st_mtime < lock_mtime:
        npm = shutil.which("npm")
        if npm is None:
            raise InputError("npm: not found; install Node.js (npm) to fetch the map assets")
        print("map assets: npm ci (leaflet, leaflet-draw, ...)", flush=True)
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=repo, check=True,
        )
    staging = vendor.with_name(".vendor.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for asset in VENDOR_ASSETS:
        src_root = node_modules / asset.package
        out = staging / asset.dest
        for rel in asset.files:
            src = src_root / rel
            if not src.is_file():
                raise InputError(f"{src}: missing from the npm package {asset.package}")
            target = out / _dest_file(asset, Path(rel).name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
        for rel in asset.dirs:
            shutil.copytree(src_root / rel, out / Path(rel).name, dirs_exist_ok=True)
    old = vendor.with_name(".vendor.old")
    shutil.rmtree(old, ignore_errors=True)
    if vendor.exists():
        vendor.rename(old)
    staging.rename(vendor)
    shutil.rmtree(old, ignore_errors=True)
    atomic_write_text(stamp, json.dumps(wanted))
    print(f"map assets: installed into {vendor}", flush=True)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        install(force="--force" in args)
    except (InputError, subprocess.CalledProcessError) as err:
        print(f"error: map assets: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
