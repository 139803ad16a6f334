"""Fleetbox: the Chalice app.  Registration only — behaviour lives in chalicelib/."""
from chalice import Chalice

from chalicelib.handlers import access, devices, meta, middleware, products

app = Chalice(app_name="fleetbox")

app.register_middleware(middleware.http_envelope, "http")
app.register_blueprint(meta.bp)
app.register_blueprint(access.bp)
app.register_blueprint(products.bp)
app.register_blueprint(devices.bp)
