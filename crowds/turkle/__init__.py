"""The embedded Turkle backend: the server process and accounts (:mod:`server`, :mod:`site`), its
REST API client (:mod:`api`), the ledger (:mod:`ledger`) and publish/status/collect
(:mod:`backend`). Needs the ``turkle`` extra."""

__all__ = ["api", "backend", "ledger", "server", "site"]
