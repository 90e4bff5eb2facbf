"""Incident lifecycle and posting (issue #8, docs/notifications.md).

Between runs an environment's incidents live in a state store (``state.py``: the interface
and the data; ``sqlite_store.py``, ``redis_store.py``). After a run's summary is on disk,
``posting.py`` takes the store's lock, lets ``lifecycle.py`` (pure policy: when to alert,
update, escalate, resolve) decide, enqueues the deliveries in the store's outbox, releases the
lock, then drains the outbox through the notifiers (``notifiers/``, one module each), each
delivery claimed pending → sending first so that two runners never send the same one.

A run whose environment has neither ``[notify]`` nor ``[incident_state]`` reads only
``config.enabled`` of all this; each notifier imports its HTTP client (requests,
slack_sdk) only when it sends, each store its client (redis) when it first connects.
"""
