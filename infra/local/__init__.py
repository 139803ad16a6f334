"""The embedded local stack (ARCHITECTURE §1): moto server, chalice local, worker loop.

Run it with ``python -m infra.local`` (``make run``); see :mod:`infra.local.stack`.
:func:`infra.local.bootstrap.bootstrap` creates the template's resources and
:class:`infra.local.worker.WorkerLoop` drives SQS and schedule handlers; both work under
moto's ``mock_aws`` as well.
"""


def __getattr__(name: str):  # lazy: importing the package must stay cheap
    if name == "LocalStack":
        from infra.local.stack import LocalStack

        return LocalStack
    raise AttributeError(name)
