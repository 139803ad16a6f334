"""Integration fixtures: moto's mock_aws with the stage's real tables, the Chalice test client, and
the fakes several modules share (the device publisher's recorder, a loopback webhook receiver).
The plain helpers they use are in ``tests/integration/helpers.py``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from tests.integration.helpers import CHUNK, PRODUCT, Api, Recorder, make_device, make_product
from tests.receiver import Receiver

#: the local master key of sealed secrets in tests (services/sealing.py); 32 bytes, base64
SEAL_KEY = "dGVzdC1zZWFsLWtleS10aGlydHktdHdvLWJ5dGVzISE="


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from chalicelib.core.config import reload_settings
    from chalicelib.services import location, sealing
    from infra.local.bootstrap import bootstrap

    monkeypatch.setenv("FLEETBOX_SEAL_KEY", SEAL_KEY)
    reload_settings()
    sealing.forget()
    with mock_aws():
        bootstrap("test")
        location.forget()
        yield
    monkeypatch.delenv("FLEETBOX_SEAL_KEY", raising=False)
    reload_settings()


@pytest.fixture()
def api(aws: None) -> Iterator[Api]:
    from chalice.test import Client

    from app import app
    from chalicelib.services import access

    key = access.seed_root()
    with Client(app) as client:
        yield Api(client, key)


@pytest.fixture()
def product(api: Api) -> dict[str, Any]:
    resp = api.post("/v1/products", PRODUCT)
    assert resp.status_code == 201, resp.body
    return resp.json


@pytest.fixture()
def recorder(aws: None) -> Iterator[Recorder]:
    """The device publisher, recording; the product and gateway caches start empty."""
    from chalicelib.protocol import publisher
    from chalicelib.services import catalog, gateways

    rec = Recorder()
    publisher.use(rec)
    catalog.forget_products()
    gateways.forget_cache()
    yield rec
    publisher.use(None)
    catalog.forget_products()
    gateways.forget_cache()


@pytest.fixture()
def lamp(api: Api, recorder: Recorder) -> str:
    """A thing-model product (helpers.MODEL) with one device, ``dev1``; its ProductId."""
    pid = make_product(api)
    make_device(api, pid, "dev1")
    return pid


@pytest.fixture()
def loopback(monkeypatch: pytest.MonkeyPatch, aws: None) -> Iterator[None]:
    """Webhooks may target loopback (the test receiver), and rules are never cached."""
    from chalicelib.core.config import reload_settings
    from chalicelib.forwarders import engine
    from chalicelib.services import rules

    monkeypatch.setenv("FLEETBOX_ALLOW_LOOPBACK", "true")
    monkeypatch.setenv("FLEETBOX_RULES_CACHE_S", "0")
    reload_settings()
    engine.forget()
    rules.forget()
    yield
    monkeypatch.delenv("FLEETBOX_ALLOW_LOOPBACK")
    monkeypatch.delenv("FLEETBOX_RULES_CACHE_S")
    reload_settings()
    engine.forget()
    rules.forget()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on loopback whose SHA1 token is ``tok123``."""
    r = Receiver(token="tok123").start()
    yield r
    r.stop()


@pytest.fixture()
def small_chunks(monkeypatch: pytest.MonkeyPatch):
    """Batch jobs in chunks of :data:`CHUNK` rows, and the files bucket bootstrap creates."""
    from chalicelib.core.config import reload_settings
    from chalicelib.services import files, jobs

    monkeypatch.setenv("FLEETBOX_BATCH_CHUNK_SIZE", str(CHUNK))
    monkeypatch.setenv("FLEETBOX_BUCKET", "fleetbox-test-files-123456789012")  # what bootstrap creates
    reload_settings()
    jobs.forget()
    files.forget()
    yield
    monkeypatch.undo()
    reload_settings()
    jobs.forget()
    files.forget()
