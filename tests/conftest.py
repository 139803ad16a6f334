"""Test-wide environment: a `test` stage, fake credentials, no AWS endpoint.

Set before anything imports chalicelib (settings and table names are read once).
`mock_aws` ignores custom endpoints, so AWS_ENDPOINT_URL must be unset here;
e2e tests start the local stack in a subprocess with its own environment.

The helper modules (shared code, never test modules) get pytest's assertion rewriting too, so a
failed check inside a helper reports its values as one in a test does.
"""

import os

import pytest

pytest.register_assert_rewrite(
    "tests.helpers", "tests.receiver", "tests.integration.helpers", "tests.e2e.fleet", "tests.e2e.stack"
)

os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.update(
    {
        "FLEETBOX_STAGE": "test",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_DEV": "false",
        "FLEETBOX_LOG_LEVEL": "WARNING",
        "FLEETBOX_DEVICE_QUOTA": "50",
    }
)


@pytest.fixture(autouse=True)
def _test_clock_starts_true() -> object:
    """Every test starts and ends on the real clock: a test that moves the test clock
    (``clock.shift``, ``FakeQueue.advance``) cannot leak its offset into the next file's tests."""
    from chalicelib.core import clock

    clock.reset()
    yield
    clock.reset()
