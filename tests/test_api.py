"""HTTP API: every route answers what the service answers, and bad requests get a clear 4xx."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from textitsr.api import ApiConfig, create_app, is_loopback
from textitsr.errors import InputError
from textitsr.service import SearchFilters, SearchService


@pytest.fixture(scope="module")
def service(tiny_archive) -> SearchService:
    return SearchService.open(tiny_archive.store)


@pytest.fixture(scope="module")
def client(service: SearchService) -> TestClient:
    return TestClient(create_app(service, ApiConfig(max_k=50, max_query_chars=200)))


def b64_png(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_text_search_returns_the_service_ranking(client: TestClient, service: SearchService) -> None:
    r = client.post("/search/text", json={"query": "new buildings along the road", "k": 5})
    assert r.status_code == 200
    hits = r.json()["hits"]
    expected = service.search_text("new buildings along the road", k=5)
    assert [h["pair_id"] for h in hits] == [h.pair_id for h in expected]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in expected], abs=1e-6)
    assert hits[0]["rank"] == 1 and len(hits[0]["bounds"]) == 4 and hits[0]["captions"]
    same = client.get("/search/text", params={"q": "new buildings along the road", "k": 5}).json()
    assert same == r.json()


def test_text_search_with_filters(client: TestClient, service: SearchService) -> None:
    bounds = service.catalog.pair("test_000003")["bounds"]
    r = client.post("/search/text", json={"query": "road", "k": 40, "filters": {"bbox": list(bounds)}})
    ids = [h["pair_id"] for h in r.json()["hits"]]
    expected = service.search_text("road", 40, SearchFilters(bbox=bounds))
    assert "test_000003" in ids and len(ids) == len(expected)
    dates = {"date_from": "2030-01-01", "date_to": "2020"}
    r = client.post("/search/text", json={"query": "road", "filters": dates})
    assert r.status_code == 400 and "date_from" in r.json()["detail"]


def test_pair_search_and_describe(client: TestClient, service: SearchService) -> None:
    r = client.post("/search/pair", json={"pair_id": "test_000003", "k": 4})
    ids = [h["pair_id"] for h in r.json()["hits"]]
    assert ids == [h.pair_id for h in service.search_pair("test_000003", k=4)] and "test_000003" not in ids
    r = client.post("/describe", json={"pair_id": "test_000003", "k": 3})
    texts = [h["text"] for h in r.json()["hits"]]
    assert texts == [h.text for h in service.describe_pair("test_000003", k=3)] and len(texts) == 3


def test_pair_search_by_uploaded_images(client: TestClient, service: SearchService) -> None:
    before, after = service.catalog.thumbnails("test_000005")
    body = {"before_image": b64_png(before), "after_image": b64_png(after), "k": 3}
    r = client.post("/search/pair", json=body)
    assert r.status_code == 200
    assert [h["pair_id"] for h in r.json()["hits"]] == [
        h.pair_id for h in service.search_pair(before=before, after=after, k=3)
    ]
    r = client.post("/search/pair", json={"before_image": b64_png(before), "k": 3})
    assert r.status_code == 422 and "after_image" in r.text
    r = client.post("/search/pair", json={"before_image": "not base64!", "after_image": "AAAA"})
    assert r.status_code == 400 and "before_image" in r.json()["detail"]
    r = client.post("/search/pair", json={"before_image": "AAAA", "after_image": "AAAA"})
    assert r.status_code == 400 and "image" in r.json()["detail"]


def test_pair_record_thumbnail_and_footprints(client: TestClient, service: SearchService) -> None:
    rec = client.get("/pairs/test_000003").json()
    want = service.catalog.pair("test_000003")
    assert rec["pair_id"] == "test_000003" and rec["bounds"] == list(want["bounds"])
    assert rec["change_reading"] is None  # this archive's model has no change-type probe
    png = client.get("/pairs/test_000003/thumbnail/after")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(png.content)))
    assert np.array_equal(shown, service.catalog.thumbnails("test_000003")[1])
    geo = client.get("/footprints")
    assert geo.headers["content-type"] == "application/geo+json"
    features = geo.json()["features"]
    assert geo.json()["type"] == "FeatureCollection" and len(features) == len(service)
    w, s, e, n = rec["bounds"]
    some = client.get("/footprints", params={"bbox": f"{w},{s},{e},{n}", "limit": 2}).json()["features"]
    assert 1 <= len(some) <= 2
    assert client.get("/footprints", params={"bbox": "1,2,3"}).status_code == 400
    assert client.get("/stats").json()["n_pairs"] == len(service)
    health = client.get("/health").json()
    assert health["n_pairs"] == len(service)
    # The default (MiniLM) text encoder answers queries on ONNX Runtime after its probe.
    assert health["text_backend"].startswith("onnx (probe cosine to PyTorch 1.0")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("post", "/search/text", {"query": ""}, 422, "query"),
        ("post", "/search/text", {"query": "x" * 201}, 422, "query"),
        ("post", "/search/text", {"query": "   "}, 400, "query"),
        ("post", "/search/text", {"query": "road", "k": 0}, 422, "k"),
        ("post", "/search/text", {"query": "road", "k": 51}, 422, "k"),
        ("post", "/search/text", {"query": "road", "k": "ten"}, 422, "k"),
        ("post", "/search/text", {"query": "road", "filters": {"bbox": [1, 2]}}, 422, "bbox"),
        ("post", "/search/text", {"query": "road", "filters": {"bbox": [5, 0, 1, 1]}}, 400, "bbox"),
        ("post", "/search/pair", {"pair_id": "nope"}, 404, "pair_id"),
        ("post", "/search/pair", {}, 422, "pair_id"),
        ("post", "/search/pair", {"pair_id": "test_000003", "after_image": "AAAA"}, 422, "pair_id"),
        ("post", "/describe", {"pair_id": "nope"}, 404, "pair_id"),
        ("get", "/pairs/nope", None, 404, "pair_id"),
        ("get", "/pairs/test_000003/thumbnail/during", None, 422, "when"),
        ("get", "/search/text?k=3", None, 422, "q"),
        ("get", "/footprints?limit=0", None, 422, "limit"),
    ],
)
def test_bad_requests_get_a_clear_4xx(client: TestClient, method, path, body, status, field) -> None:
    r = client.request(method.upper(), path, json=body)
    assert r.status_code == status, r.text
    assert field in r.text


def test_malformed_json_and_oversized_bodies_are_refused(service: SearchService) -> None:
    client = TestClient(create_app(service, ApiConfig(max_body_bytes=1_000)))
    r = client.post("/search/text", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/search/text", json={"query": "road " * 300})
    assert r.status_code == 413 and "at most 1000" in r.json()["detail"]


def test_token_is_required_when_configured(service: SearchService) -> None:
    client = TestClient(create_app(service, ApiConfig(host="0.0.0.0", token="s3cret")))
    assert client.get("/health").status_code == 200
    assert client.post("/search/text", json={"query": "road"}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post("/search/text", json={"query": "road"}, headers=wrong).status_code == 401
    good = {"Authorization": "Bearer s3cret"}
    assert client.post("/search/text", json={"query": "road"}, headers=good).status_code == 200
    assert client.get("/pairs/test_000003", headers=good).status_code == 200
    assert "/search/text" in client.get("/openapi.json").json()["paths"]


def test_non_loopback_without_token_is_refused(service: SearchService) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    with pytest.raises(InputError, match="token"):
        create_app(service, ApiConfig(host="0.0.0.0"))
