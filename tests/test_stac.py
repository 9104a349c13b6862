"""STAC in: a static catalog of COGs (local and over HTTP with range requests) read into tile pairs
with their STAC facts, the pairing rules, and one clear line for each kind of bad catalog."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from stac_fixtures import (
    ItemSpec,
    crop,
    landsat_specs,
    lonlat_bbox,
    naip_specs,
    serve,
    write_api,
    write_catalog,
    write_cog,
)

from tests.conftest import cli_main, shared_path
from textitsr.data.stac import StacQuery, StacScene, StacSource, pair_indices, parse_bbox, parse_interval
from textitsr.errors import InputError

RGB = ("red", "green", "blue")


@pytest.fixture(scope="session")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static catalog: collection naip (3 dates, one COG per band) and landsat (3 dates, visual)."""
    geo = shared_path("geo")
    root = tmp_path_factory.mktemp("stac")
    return write_catalog(root, naip_specs(geo, root / "cogs") + landsat_specs(geo, root / "cogs"))


@pytest.fixture(scope="session")
def server(catalog: Path):
    with serve(catalog.parent) as running:
        yield running


def test_local_catalog_gives_tile_pairs_with_stac_facts(catalog: Path) -> None:
    source = StacSource(str(catalog), StacQuery(collection="naip", assets=RGB), tile_size=64)
    pairs = list(source.pairs())
    assert len(source.series) == 1 and len(pairs) == 2 * 9  # 3 dates -> 2 pairs, 3 x 3 tiles (edge flush)
    first = pairs[0]
    assert first.bands == RGB and first.before.shape == (64, 64, 3) and first.source == "stac"
    assert first.dates == ("2012-07-31", "2014-07-20")
    assert first.pair_id.startswith("m_4709963_se_14_1_20120731_20140720_r0_c0")
    facts = first.location["stac"]
    assert facts["before"]["id"] == "m_4709963_se_14_1_20120731" and facts["after"]["cloud_cover"] == 5.0
    assert facts["before"]["gsd"] == 5.0 and facts["before"]["collection"] == "naip"
    assert facts["before"]["href"].endswith("m_4709963_se_14_1_20120731.json")
    assert set(facts["before"]["assets"]) == set(RGB)
    assert first.crs == "EPSG:26914" and first.bounds[0] == pytest.approx(-99.17, abs=0.05)
    assert 0 < first.before.mean() < 1
    json.dumps(first.location)  # what the store keeps must be JSON


def test_visual_asset_takes_band_names_from_the_catalog(catalog: Path) -> None:
    source = StacSource(str(catalog), StacQuery(collection="landsat", pairing="all"), tile_size=64)
    pairs = list(source.pairs())
    assert len(pairs) == 3 * 9 and pairs[0].bands == ("swir1", "nir", "red", "green")
    assert {p.dates for p in pairs} == {("1985-07-01", "1990-07-01"), ("1985-07-01", "1995-07-01"),
                                        ("1990-07-01", "1995-07-01")}


def test_two_places_and_filters(catalog: Path) -> None:
    both = StacSource(str(catalog), tile_size=64)  # naip: red/green/blue assets, landsat: visual
    assert sorted(s.place for s in both.series) == ["landsat", "m_4709963_se_14_1"]
    source = StacSource(str(catalog), StacQuery(assets=RGB, bbox=parse_bbox("-100,46,-98,48"),
                                                datetime="2013-01-01/.."), tile_size=64)
    assert [[sc.date for sc in s.scenes] for s in source.series] == [["2014-07-20", "2016-08-16"]]
    with pytest.raises(InputError, match="no items match"):
        StacSource(str(catalog), StacQuery(collection="naip", datetime="2030-01-01/.."))


def test_http_catalog_is_read_with_range_requests(catalog: Path, server) -> None:
    url = f"{server.url}/catalog.json"
    source = StacSource(url, StacQuery(collection="naip", assets=RGB), tile_size=64)
    pairs = list(source.pairs())
    assert len(pairs) == 2 * 9 and pairs[0].location["stac"]["before"]["href"].startswith(server.url)
    assert pairs[0].location["stac"]["before"]["assets"]["red"].startswith(server.url)
    gets = [(status, n) for verb, path, status, n in server.log if verb == "GET" and path.endswith(".tif")]
    assert gets and all(status == 206 for status, _ in gets)  # range reads, never a whole file
    local = list(StacSource(str(catalog), StacQuery(collection="naip", assets=RGB), tile_size=64).pairs())
    assert [p.pair_id for p in local] == [p.pair_id for p in pairs]
    for a, b in zip(local, pairs, strict=True):
        assert (a.before == b.before).all() and (a.after == b.after).all()


def test_stac_api_search(catalog: Path, server) -> None:
    url = write_api(catalog.parent, server.url, catalog, "naip")
    source = StacSource(url, StacQuery(collection="naip", assets=RGB, datetime="2013-01-01/.."), tile_size=64)
    pairs = list(source.pairs())
    assert any(path == "search" for _, path, _, _ in server.log)  # asked the API, not a walk
    assert len(pairs) == 9 and {p.dates for p in pairs} == {("2014-07-20", "2016-08-16")}
    assert pairs[0].location["stac"]["before"]["assets"]["red"].startswith(server.url)


def test_pairings() -> None:
    def scene(day: str, cloud: float | None = None) -> StacScene:
        return StacScene(day, "c", day, (0, 0, 1, 1), {"cloud_cover": cloud})

    scenes = [scene("2018-06-01", 30), scene("2018-07-01", 5), scene("2019-06-20"), scene("2020-01-10", 1),
              scene("2021-06-05", 2)]
    assert pair_indices(scenes, "consecutive") == "consecutive"
    assert pair_indices(scenes, "yearly") == [(1, 2), (2, 3), (3, 4)]  # 2018: the least cloudy
    assert pair_indices(scenes, "season") == [(0, 2), (1, 2), (2, 4)]  # within 45 days of the day of year
    with pytest.raises(InputError, match="--pairing 'weekly'"):
        pair_indices(scenes, "weekly")
    assert parse_interval("2019-01-01/..")[1] is None
    for bad in ("1,2,3", "10,50,5,60"):
        with pytest.raises(InputError, match="--bbox"):
            parse_bbox(bad)


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_missing_asset_is_one_line(catalog: Path) -> None:
    with pytest.raises(InputError) as err:
        StacSource(str(catalog), StacQuery(collection="naip", assets=("red", "green", "swir16")))
    assert "no asset 'swir16'" in _one_line(err) and "it has red, green, blue, nir" in str(err.value)


def test_mixed_crs_in_an_item_is_one_line(catalog: Path, tmp_path: Path) -> None:
    geo = shared_path("geo")
    spec = naip_specs_first(catalog)
    data, profile = crop(geo / "naip" / "m_4709963_se_14_1_20120731.tif", crs="EPSG:4326")
    warped = write_cog(data[1:2], profile, tmp_path / "cogs" / "green_4326.tif")
    bad = replace(spec, assets={**spec.assets, "green": str(warped)})
    other = replace(spec, id="other", when="2014-07-20")
    cat = write_catalog(tmp_path / "cat", [bad, other])
    with pytest.raises(InputError) as err:
        StacSource(str(cat), StacQuery(assets=RGB))
    assert "different CRS" in _one_line(err) and "EPSG:4326" in str(err.value)


def test_no_overlap_is_one_line(tmp_path: Path) -> None:
    geo = shared_path("geo")
    specs = []
    for k, col in enumerate((0, 700)):  # two crops of one scene that do not overlap
        data, profile = crop(geo / "naip" / "m_4709963_se_14_1_20120731.tif", col=col, row=0)
        cog = write_cog(data[:3], profile, tmp_path / "cogs" / f"part{k}.tif")
        specs.append(ItemSpec(id=f"part{k}", when=f"201{k}-06-01", bbox=lonlat_bbox(profile, data.shape[1:]),
                              assets={"visual": str(cog)}, collection="naip"))
    cat = write_catalog(tmp_path / "cat", specs)
    with pytest.raises(InputError) as err:
        StacSource(str(cat))
    assert "no two of the 2 matching items cover the same place" in _one_line(err)


def test_404_asset_over_http_is_one_line_from_the_cli(catalog: Path, tmp_path: Path, monkeypatch,
                                                      capsys) -> None:
    spec = naip_specs_first(catalog)
    gone = replace(spec, id="gone", when="2014-07-20",
                   assets={**spec.assets, "red": str(tmp_path / "cat" / "cogs" / "deleted.tif")})
    cat = write_catalog(tmp_path / "cat", [spec, gone])
    (tmp_path / "cat" / "cogs").mkdir(parents=True, exist_ok=True)
    for key, href in spec.assets.items():  # the good item's COGs are served beside the catalog
        target = tmp_path / "cat" / "cogs" / Path(href).name
        target.write_bytes(Path(href).read_bytes())
        spec.assets[key] = str(target)
    write_catalog(tmp_path / "cat", [spec, gone])
    with serve(cat.parent) as server:
        code, err = cli_main(monkeypatch, capsys, "index", "--checkpoint", tmp_path / "model", "--out",
                             tmp_path / "store", "--stac", f"{server.url}/catalog.json",
                             "--assets", "red,green,blue")
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ")
    assert "'gone' asset 'red'" in err and "404" in err
    assert not (tmp_path / "store").exists()


def naip_specs_first(catalog: Path) -> ItemSpec:
    """The first NAIP item of the session catalog as a spec (absolute asset paths)."""
    import pystac

    item = next(i for i in pystac.read_file(str(catalog)).get_items(recursive=True)
                if i.id == "m_4709963_se_14_1_20120731")
    return ItemSpec(id=item.id, when="2012-07-31", bbox=tuple(item.bbox),
                    assets={k: a.get_absolute_href() for k, a in item.assets.items()}, collection="naip")


def test_index_stac_over_http_builds_a_searchable_store(tiny_archive, catalog: Path, server, tmp_path: Path,
                                                       monkeypatch, capsys) -> None:
    from textitsr.service import SearchService

    store = tmp_path / "store"
    code, err = cli_main(monkeypatch, capsys, "index", "--checkpoint", tiny_archive.checkpoint,
                         "--out", store, "--stac", f"{server.url}/catalog.json", "--collection", "naip",
                         "--assets", "red,green,blue", "--tile-size", "64", "--pairing", "yearly")
    assert code == 0, err
    service = SearchService.open(store)
    hits = service.search_text("new buildings", k=3)
    assert len(service.catalog) == 2 * 9 and len(hits) == 3
    record = service.catalog.pair(hits[0].pair_id)
    facts = record["location"]["stac"]
    assert record["source"] == "stac" and facts["before"]["id"].startswith("m_4709963_se_14_1_")
    assert facts["catalog"] == f"{server.url}/catalog.json" and facts["after"]["gsd"] == 5.0


def test_inspector_line_shows_the_stac_facts_escaped() -> None:
    from textitsr.app.inspector import stac_line

    record = {"location": {"stac": {
        "before": {"id": "a*b", "collection": "naip", "cloud_cover": 0.0, "gsd": 5.0, "href": "http://h/a.json"},
        "after": {"id": "c", "cloud_cover": 5}}}}
    line = stac_line(record)
    assert "**a\\*b** → **c**" in line and "cloud cover 0% → 5%" in line and "GSD 5 m" in line
    assert "collection **naip**" in line and stac_line({"location": {"kind": "geotiff"}}) is None
