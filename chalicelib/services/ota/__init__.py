"""OTA firmware upgrades and resource distribution (SPEC §8), by audience:

* ``store`` — the tables, per-device job state changes, task outcomes and live tasks they share;
* ``tasks`` — people (the HTTP API): create, read, cancel, retry, confirm;
* ``rollout`` — the queued steps that plan, dispatch, sweep and close a task;
* ``device`` — the device protocol (``ota/report``, ``resource/up/service``) as uplink stages.
"""
