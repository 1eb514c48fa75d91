"""Prolific: recruit participants for a run's study and reconcile their submissions.

The tasks themselves are served by the embedded Turkle server (its Prolific gateway); this
package talks to Prolific's API (:mod:`crowds.prolific.api`), keeps the run's ledger
(:mod:`crowds.prolific.ledger`), builds the study and its money (:mod:`crowds.prolific.study`),
and publishes, reconciles, reviews and pays (:mod:`crowds.prolific.backend`,
:mod:`crowds.prolific.payments`). docs/prolific.md describes the whole study.
"""

__all__ = ["api", "backend", "ledger", "payments", "study"]
