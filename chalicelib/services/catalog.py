"""The product catalogue as the device paths see it: each product with its compiled thing model.

The uplink pipeline, presence, gateways, streams and the device-data routes all need a
product's data protocol, device type, custom topics and compiled thing model for every message
they handle; :func:`product_info` serves them from an in-process cache (:data:`MODEL_TTL_S`),
so a thing-model import elsewhere is seen within seconds and a hot product costs no read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..models.products import ProductRecord
from . import thing_model

MODEL_TTL_S = 10.0


@dataclass(frozen=True)
class ProductInfo:
    product_id: str
    data_protocol: str
    device_type: str
    model: thing_model.CompiledModel
    doc: dict
    custom_topics: tuple
    updated_at: int


_products: dict[str, tuple[float, ProductInfo | None]] = {}
_products_lock = threading.Lock()


def _info_of(rec: ProductRecord, previous: ProductInfo | None) -> ProductInfo:
    if previous is not None and previous.updated_at == int(rec.updated_at):
        return previous
    doc = thing_model.export_model(rec.thing_model) if rec.thing_model else {}
    return ProductInfo(
        rec.product_id,
        rec.data_protocol,
        rec.device_type,
        thing_model.compile_model(doc),
        doc,
        tuple(rec.topics or ()),
        int(rec.updated_at),
    )


def product_info(product_id: str, *, fresh: bool = False) -> ProductInfo | None:
    """The product with its compiled thing model, cached in-process for :data:`MODEL_TTL_S`."""
    now = time.monotonic()
    with _products_lock:
        hit = _products.get(product_id)
    if hit is not None and not fresh and now - hit[0] < MODEL_TTL_S:
        return hit[1]
    try:
        rec = ProductRecord.get(product_id, consistent_read=fresh)
    except ProductRecord.DoesNotExist:
        info = None
    else:
        info = _info_of(rec, hit[1] if hit else None)
    with _products_lock:
        _products[product_id] = (now, info)
    return info


def forget_products() -> None:
    """Drop the product cache (tests; a thing-model import elsewhere is seen within the TTL)."""
    with _products_lock:
        _products.clear()
