"""The embedded Turkle backend: the server process and accounts (:mod:`server`, :mod:`site`), its
REST API client (:mod:`api`), the ledger (:mod:`ledger`) and publish/status/collect
(:mod:`backend`), the Prolific gateway served in it (:mod:`gateway`) and the task host a recruiting
crowd is handed (:mod:`host`). Needs the ``turkle`` extra."""

__all__ = ["api", "backend", "gateway", "host", "ledger", "server", "site"]
