"""Same-source and same-destination counterfactual pairs (paper section 4.1; docs/method.md §7).

For a DAG ``cause -> effect`` found by CAGE:

* **same source**: one real image ``x`` (latent ``z = ENC(x)``) is manipulated twice, once on the
  cause (towards the opposite of its cause label) and once on the effect (towards the opposite of
  its effect label);
* **same destination**: a target combination ``(c*, e*)`` is reached from two *different* real
  images: one labelled ``(1 - c*, e*)`` has its cause set to ``c*``, one labelled ``(c*, 1 - e*)``
  has its effect set to ``e*``. The four combinations are used in turn.

A manipulation of attribute ``a`` towards target ``y`` moves ``z`` along a unit direction ``u_a``
(the normal ``h_a`` of the latent classifier, eq. 4), ``z + s alpha u_a`` with ``s = +1`` for
``y = 1`` and ``-1`` for ``y = 0``. ``alpha`` is chosen per image so that the latent classifier's
probability of the target reaches ``target_probability``:
``alpha = max(alpha_min, (logit(p*) - s l(z)) / (w_a . u_a))`` with the logit
``l(z) = w_a . z + b_a`` (``w_a . u_a = |w_a|`` for the plain normal). The decoded, 8-bit quantised
counterfactual is then checked by the observation-space classifier ``psi_a``; if it has not
reached the target (``P(a = y) < check_threshold``, default 0.5), alpha is multiplied by
``alpha_growth`` up to ``alpha_steps - 1`` times, and if it still fails the source image is
replaced by the next unused one. Every pair records the alpha used, the check probability and how
many candidate rounds it took; the statistics of the failures are returned.

Under torchrun the manipulations of a round (:class:`ManipulationJob`, one batch each) are dealt
over the ranks (:class:`Manipulator` runs them anywhere) and booked on rank 0 in the order one
process books them, so the pairs and files are the same (docs/distributed.md).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cage.compute import distributed
from cage.compute.distributed import Workers
from cage.pairs.images import ImageStore, invalid_images, to_uint8
from cage_eval import progress
from cage_eval.errors import ConfigError
from cage_eval.runs import dag_name

#: The four target combinations of the same-destination setting, in the order they are used.
COMBINATIONS = ((1, 1), (0, 0), (1, 0), (0, 1))


@dataclass(frozen=True)
class PairConfig:
    """How pairs are made (section ``[pairs]`` of an image experiment)."""

    n_same_source: int = 100
    n_same_destination: int = 100
    target_probability: float = 0.9
    alpha_min: float = 0.5
    alpha_growth: float = 1.5
    alpha_steps: int = 3
    check_threshold: float = 0.5
    batch: int = 256
    max_invalid_share: float = 0.01
    seed: int = 0


@dataclass(frozen=True)
class LinearAttribute:
    """The latent classifier of one attribute, ``logit(z) = coef . z + intercept``, and the unit
    direction ``u`` along which it is manipulated (default: the classifier's normal, eq. 4; the
    CAGE run's conditional direction when it used one)."""

    name: str
    coef: np.ndarray
    intercept: float
    direction: np.ndarray | None = None

    @property
    def unit(self) -> np.ndarray:
        u = self.coef if self.direction is None else self.direction
        u = np.asarray(u, dtype=np.float64)
        return u / np.linalg.norm(u)

    @property
    def rate(self) -> float:
        """How fast the logit moves per unit of alpha along :attr:`unit` (``coef . u``)."""
        return float(np.asarray(self.coef, dtype=np.float64) @ self.unit)


@dataclass
class Manipulation:
    """Outcome of manipulating a batch of latents (arrays of shape (m,) unless stated)."""

    images: np.ndarray  # (m, H, W) or (m, H, W, 3) uint8
    alpha: np.ndarray
    check: np.ndarray  # psi's probability of the target value
    ok: np.ndarray  # bool
    tries: np.ndarray  # alpha levels tried (1 .. alpha_steps)
    target: np.ndarray  # the 0/1 value aimed at
    invalid: np.ndarray  # decodes refused: non-finite or outside [0, 1] (never written)


@dataclass(frozen=True)
class ManipulationJob:
    """One batch of manipulations with everything but the networks: picklable, so that any rank
    can run it (:class:`Manipulator`). Arrays of shape (m,) unless stated.

    Attributes
    ----------
    attr : LinearAttribute
    targets : np.ndarray
        The 0/1 values aimed at.
    z : np.ndarray, shape (m, d), float64
        The source latents.
    base : np.ndarray
        The first alpha of each.
    config : PairConfig
    image_shape : tuple of int
        ``(H, W)`` or ``(H, W, 3)``: one quantised image.
    key : str
        Never checkpointed (empty).
    """

    attr: LinearAttribute
    targets: np.ndarray
    z: np.ndarray
    base: np.ndarray
    config: PairConfig
    image_shape: tuple[int, ...]
    key: str = ""


@dataclass
class _Pending:
    """A manipulation whose first alpha is decoded but not yet checked."""

    attr: LinearAttribute
    targets: np.ndarray
    z: np.ndarray
    sign: np.ndarray
    base: np.ndarray
    unit: np.ndarray
    out: Manipulation
    config: PairConfig
    decoded: torch.Tensor | None = None


@dataclass
class PairSet:
    """The pairs of one DAG and setting, with what is needed for its contact sheet."""

    dag: str
    setting: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    sheet_rows: list[list[np.ndarray]] = field(default_factory=list)
    sheet_labels: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


ObsClassifier = Callable[[torch.Tensor], dict[str, np.ndarray]]


class Manipulator:
    """Decodes manipulated latents, quantises and checks them, escalating alpha on failure: the
    part of pair making that runs the networks. Called with a :class:`ManipulationJob` it returns
    the :class:`Manipulation` as a dict of arrays (a :class:`cage.compute.distributed.Workers` handler).

    Parameters
    ----------
    generator : object with ``decode(z) -> (m, C, H, W)`` in [0, 1], ``C`` in {1, 3}
    psi : callable
        Observation-space classifier: images ``(m, C, H, W)`` -> ``{attribute: P(attribute = 1)}``.
    """

    def __init__(self, generator: Any, psi: ObsClassifier) -> None:
        self.generator = generator
        self.psi = psi
        self.decoded = 0

    def __call__(self, job: ManipulationJob) -> dict[str, np.ndarray]:
        return dataclasses.asdict(self._finish(self._begin(job)))

    def _begin(self, job: ManipulationJob) -> _Pending:
        """Allocate the outcome and decode the batch at its first alpha (the check comes later)."""
        m = len(job.targets)
        pending = _Pending(attr=job.attr, targets=np.asarray(job.targets), z=job.z,
                           sign=np.where(np.asarray(job.targets) == 1, 1.0, -1.0), base=job.base,
                           unit=job.attr.unit, config=job.config,
                           out=Manipulation(images=np.zeros((m,) + tuple(job.image_shape),
                                                            dtype=np.uint8),
                                            alpha=np.zeros(m), check=np.zeros(m),
                                            ok=np.zeros(m, dtype=bool),
                                            tries=np.zeros(m, dtype=np.int64),
                                            target=np.asarray(job.targets, dtype=np.int64),
                                            invalid=np.zeros(m, dtype=np.int64)))
        if m:
            pending.decoded = self._decode(pending, np.arange(m), 0)
        return pending

    def _decode(self, job: _Pending, pending: np.ndarray, level: int) -> torch.Tensor:
        alpha = job.base[pending] * job.config.alpha_growth**level
        moved = job.z[pending] + (job.sign[pending] * alpha)[:, None] * job.unit[None, :]
        self.decoded += len(pending)
        out = self.generator.decode(torch.as_tensor(moved, dtype=torch.float32))
        progress.advance(len(pending))
        return out

    def _check(self, decoded: torch.Tensor, attr: LinearAttribute,
               targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Quantise decoded images to 8 bits and return them with psi's probability of the
        target value (what is written is what is checked) and which are invalid (NaN or
        infinite values, or values outside [0, 1] by more than :data:`cage.pairs.images.RANGE_TOLERANCE`: they
        fail the check, whatever psi says). Greyscale images are kept as ``(m, H, W)``, colour
        ones as ``(m, H, W, 3)``."""
        x = decoded.detach().to("cpu", torch.float32).numpy()
        invalid = invalid_images(x)
        quantised = to_uint8(np.nan_to_num(x[:, 0] if x.shape[1] == 1
                                           else x.transpose(0, 2, 3, 1)))
        planes = quantised[:, None] if quantised.ndim == 3 else quantised.transpose(0, 3, 1, 2)
        prob = self.psi(torch.as_tensor(planes, dtype=torch.float32) / 255.0)
        p_target = np.where(targets == 1, prob[attr.name], 1.0 - prob[attr.name])
        return quantised, np.where(invalid, 0.0, p_target), invalid

    def _check_first(self, job: _Pending) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert job.decoded is not None
        return self._check(job.decoded, job.attr, job.targets)

    def _finish(self, job: _Pending,
                first: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                ) -> Manipulation:
        """Check the first decode (unless ``first``, its check, is given), then escalate alpha
        for the latents that failed."""
        cfg, out = job.config, job.out
        pending = np.arange(len(out.ok))
        for level in range(cfg.alpha_steps):
            if pending.size == 0:
                break
            if level == 0:
                quantised, p_target, invalid = first if first is not None \
                    else self._check_first(job)
            else:
                decoded = self._decode(job, pending, level)
                quantised, p_target, invalid = self._check(decoded, job.attr,
                                                           job.targets[pending])
            out.invalid[pending] += invalid
            out.images[pending] = quantised
            out.alpha[pending] = job.base[pending] * cfg.alpha_growth**level
            out.check[pending] = p_target
            out.tries[pending] = level + 1
            passed = (p_target >= cfg.check_threshold) & ~invalid
            out.ok[pending] = passed
            pending = pending[~passed]
        return out


class PairMaker(Manipulator):
    """Makes counterfactual pairs for one generator and one pool of real source images.

    Parameters
    ----------
    generator : object with ``decode(z) -> (m, C, H, W)`` in [0, 1], ``C`` in {1, 3}
    latents : np.ndarray, shape (n, d)
        ``ENC(x)`` of every pool image.
    images : np.ndarray, shape (n, H, W) or (n, H, W, 3), uint8
        The real pool images (written as the pairs' sources); any object with ``shape`` and
        integer indexing that returns one such image will do (a lazily read folder).
    labels : dict[str, np.ndarray]
        0/1 attribute labels of the pool images, shape (n,) each.
    ids : np.ndarray, shape (n,)
        Dataset ids of the pool images (``source_*_id`` in pairs.csv).
    psi : callable
        Observation-space classifier: images ``(m, C, H, W)`` -> ``{attribute: P(attribute = 1)}``.
    store : ImageStore
        Where PNGs go.
    config : PairConfig
    generator_name : str
        How errors name the generator (its config key and value).
    """

    def __init__(self, generator: Any, latents: np.ndarray, images: np.ndarray,
                 labels: dict[str, np.ndarray], ids: np.ndarray, psi: ObsClassifier,
                 store: ImageStore, config: PairConfig, *, generator_name: str = "") -> None:
        super().__init__(generator, psi)
        self.generator_name = generator_name or f"the generator ({type(generator).__name__})"
        self.latents = np.asarray(latents, dtype=np.float32)
        self.images = images
        self.labels = labels
        self.ids = np.asarray(ids)
        self.store = store
        self.config = config

    # ------------------------------------------------------------------ one manipulation

    def manipulate(self, idx: np.ndarray, attr: LinearAttribute, targets: np.ndarray) -> Manipulation:
        """Move pool latents ``idx`` towards ``targets`` on ``attr``, escalating alpha on failure."""
        return self._finish(self._start(idx, attr, targets))

    def _plan(self, idx: np.ndarray, attr: LinearAttribute, targets: np.ndarray
              ) -> ManipulationJob:
        """Choose each latent's first alpha: what :meth:`_begin` (here or on another rank) runs."""
        cfg = self.config
        z = self.latents[idx].astype(np.float64)
        sign = np.where(targets == 1, 1.0, -1.0)
        logit0 = z @ attr.coef + attr.intercept
        goal = math.log(cfg.target_probability / (1.0 - cfg.target_probability))
        rate = attr.rate
        needed = (goal - sign * logit0) / rate if rate > 1e-9 else np.zeros(len(idx))
        return ManipulationJob(attr=attr, targets=np.asarray(targets), z=z,
                               base=np.maximum(cfg.alpha_min, needed), config=cfg,
                               image_shape=tuple(self.images.shape[1:]))

    def _start(self, idx: np.ndarray, attr: LinearAttribute, targets: np.ndarray) -> _Pending:
        """Choose each latent's first alpha and decode the batch (the check comes later)."""
        return self._begin(self._plan(idx, attr, targets))

    def _sharing(self) -> Workers | None:
        """The run's workers when several ranks serve manipulations through this maker's own
        generator and classifier (cage.run.pipeline registers the setup's), else None."""
        workers = distributed.current()
        if workers is None or workers.world_size < 2:
            return None
        handler = workers.handlers.get("manipulate")
        same = isinstance(handler, Manipulator) and handler.generator is self.generator \
            and handler.psi is self.psi
        return workers if same else None

    def _run(self, jobs: list[ManipulationJob]) -> list[Manipulation]:
        """Run ``jobs``, dealt over the ranks when they share the work, else here in order."""
        workers = self._sharing()
        if workers is None:
            return [self._finish(self._begin(job)) for job in jobs]
        done = [Manipulation(**r) for r in workers.map("manipulate", jobs, checkpoint=False)]
        decoded = sum(int(m.tries.sum()) for m in done)  # the decodes the manipulations made
        self.decoded += decoded
        workers.stats["manipulate"].decoded += decoded
        return done

    # ------------------------------------------------------------------ the two settings

    def same_source(self, cause: LinearAttribute, effect: LinearAttribute, n: int,
                    pool: np.ndarray) -> PairSet:
        """``n`` same-source pairs from the pool indices ``pool`` (in that order of preference)."""
        dag = dag_name(cause.name, effect.name)
        if n > len(pool):
            raise ConfigError(
                f"[pairs] n_same_source = {n}: only {len(pool)} source images are available for "
                f"{dag}; ask for at most {len(pool)} pairs")
        result = PairSet(dag=dag, setting="same_source")
        queue = collections.deque(int(i) for i in pool)
        tries = np.zeros(n, dtype=np.int64)
        done: dict[int, tuple[dict[str, Any], list[np.ndarray], str]] = {}
        stats = _Counter()
        helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="psi",
                                    initializer=torch.set_num_threads, initargs=(1,))
        try:
            with _counting(dag, "same-source", n):
                self._same_source_rounds(dag, cause, effect, n, queue, tries, done, stats, helper)
        finally:
            helper.shutdown(wait=True)
        for j in range(n):
            row, sheet, label = done[j]
            result.rows.append(row)
            result.sheet_rows.append(sheet)
            result.sheet_labels.append(label)
        self._guard(dag, "same_source", stats, final=True)
        result.stats = stats.summary(n, int(tries.sum()), n)
        return result

    def _same_source_rounds(self, dag: str, cause: LinearAttribute, effect: LinearAttribute,
                            n: int, queue: collections.deque[int], tries: np.ndarray,
                            done: dict[int, tuple[dict[str, Any], list[np.ndarray], str]],
                            stats: _Counter, helper: ThreadPoolExecutor) -> None:
        """Rounds of :meth:`same_source` until ``n`` pairs passed; each round gives every pair slot
        still open the next unused source."""
        while len(done) < n:
            waiting = [j for j in range(n) if j not in done]
            if len(queue) < len(waiting):
                self._guard(dag, "same_source", stats, final=True)
                raise ConfigError(
                    f"{dag} same_source: only {len(done)} of {n} pairs passed the classifier checks "
                    f"after trying {int(tries.sum())} source images; lower [pairs] n_same_source "
                    "or raise [pairs] alpha_steps")
            if self._sharing() is not None:
                self._same_source_dealt(dag, cause, effect, waiting, queue, tries, done, stats)
                continue
            # Chunks of `batch` slots, software-pipelined over two threads: the helper checks
            # one decoded batch while this thread decodes the next one, and the store's thread
            # writes images meanwhile. The source and cause images of a chunk go to the store as
            # soon as the cause passed (they are written while the effect is decoded) and are
            # taken back if the effect fails. The outcome does not depend on the overlap: every
            # batch is decoded and checked exactly as by :meth:`manipulate`.
            last: tuple[Any, ...] | None = None
            for start in range(0, len(waiting), self.config.batch):
                chunk = waiting[start:start + self.config.batch]
                idx = np.array([queue.popleft() for _ in chunk], dtype=np.int64)
                tries[chunk] += 1
                t_c = 1 - self.labels[cause.name][idx]
                job_c = self._start(idx, cause, t_c)
                check_c = helper.submit(self._check_first, job_c)
                if last is not None:
                    self._close_chunk(*last)
                mc = self._finish(job_c, check_c.result())
                early = {int(k): (self.store.add(self.images[idx[k]]),
                                  self.store.add(mc.images[k])) for k in np.flatnonzero(mc.ok)
                         if self._source_ok(int(idx[k]), stats)}
                job_e = self._start(idx, effect, 1 - self.labels[effect.name][idx])
                last = (dag, cause, effect, chunk, idx, mc, early, job_e,
                        helper.submit(self._check_first, job_e), tries, stats, done)
            if last is not None:
                self._close_chunk(*last)

    def _close_chunk(self, dag: str, cause: LinearAttribute, effect: LinearAttribute,
                     chunk: list[int], idx: np.ndarray, mc: Manipulation,
                     early: dict[int, tuple[str, str]], job_e: _Pending, check_e: Future[Any],
                     tries: np.ndarray, stats: _Counter,
                     done: dict[int, tuple[dict[str, Any], list[np.ndarray], str]]) -> None:
        """Finish a same-source chunk once its effect batch is checked: rows for the pairs whose
        two manipulations passed, the early images of the others taken back."""
        me = self._finish(job_e, check_e.result())
        stats.add(mc, me)
        for k, j in enumerate(chunk):
            if k not in early:
                continue
            name_src, name_c = early[k]
            if not me.ok[k]:
                self.store.discard(name_src)
                self.store.discard(name_c)
                continue
            names = (name_src, name_src, name_c, self.store.add(me.images[k]))
            self._source_pair(dag, cause, effect, int(idx[k]), names, mc, me, k, int(tries[j]),
                              j, done)

    def _source_pair(self, dag: str, cause: LinearAttribute, effect: LinearAttribute, src: int,
                     names: tuple[str, str, str, str], mc: Manipulation, me: Manipulation, k: int,
                     attempts: int, j: int,
                     done: dict[int, tuple[dict[str, Any], list[np.ndarray], str]]) -> None:
        """Slot ``j``'s same-source pair: source ``src``, row ``k`` of both manipulations."""
        row = self._row(dag, cause, effect, "same_source", src, src, names, mc, k, me, k, attempts)
        label = f"{cause.name} ->{int(mc.target[k])}, {effect.name} ->{int(me.target[k])}"
        done[j] = (row, [self.images[src], mc.images[k], me.images[k]], label)

    def _same_source_dealt(self, dag: str, cause: LinearAttribute, effect: LinearAttribute,
                           waiting: list[int], queue: collections.deque[int], tries: np.ndarray,
                           done: dict[int, tuple[dict[str, Any], list[np.ndarray], str]],
                           stats: _Counter) -> None:
        """One round of :meth:`same_source` with the two manipulations of every chunk dealt over
        the ranks. Each is the one the pipelined round makes (same batches), and the bookkeeping
        follows the same order, so the pairs, files and statistics are the same."""
        chunks, jobs = [], []
        for start in range(0, len(waiting), self.config.batch):
            chunk = waiting[start:start + self.config.batch]
            idx = np.array([queue.popleft() for _ in chunk], dtype=np.int64)
            tries[chunk] += 1
            chunks.append((chunk, idx))
            jobs += [self._plan(idx, cause, 1 - self.labels[cause.name][idx]),
                     self._plan(idx, effect, 1 - self.labels[effect.name][idx])]
        made = self._run(jobs)
        for (chunk, idx), mc, me in zip(chunks, made[0::2], made[1::2], strict=True):
            stats.add(mc, me)
            for k, j in enumerate(chunk):
                if mc.ok[k] and me.ok[k] and self._source_ok(int(idx[k]), stats):
                    name_src = self.store.add(self.images[idx[k]])
                    names = (name_src, name_src, self.store.add(mc.images[k]),
                             self.store.add(me.images[k]))
                    self._source_pair(dag, cause, effect, int(idx[k]), names, mc, me, k,
                                      int(tries[j]), j, done)

    def same_destination(self, cause: LinearAttribute, effect: LinearAttribute, n: int,
                         pool: np.ndarray) -> PairSet:
        """``n`` same-destination pairs, two different pool images per pair."""
        dag = dag_name(cause.name, effect.name)
        lc = self.labels[cause.name][pool]
        le = self.labels[effect.name][pool]
        queues = {(a, b): collections.deque(int(i) for i in pool[(lc == a) & (le == b)])
                  for a in (0, 1) for b in (0, 1)}
        combos = [COMBINATIONS[j % 4] for j in range(n)]
        need = {key: 0 for key in queues}
        for c, e in combos:
            need[(1 - c, e)] += 1
            need[(c, 1 - e)] += 1
        for key, count in need.items():
            if count > len(queues[key]):
                raise ConfigError(
                    f"[pairs] n_same_destination = {n}: {dag} needs {count} source images with "
                    f"{cause.name}={key[0]}, {effect.name}={key[1]} but only {len(queues[key])} "
                    "exist; ask for fewer pairs")
        result = PairSet(dag=dag, setting="same_destination")
        side_a: list[int] = [-1] * n
        side_b: list[int] = [-1] * n
        ok_a: dict[int, tuple[Manipulation, str, str]] = {}  # manipulation, source and image names
        ok_b: dict[int, tuple[Manipulation, str, str]] = {}
        rounds = np.zeros(n, dtype=np.int64)
        tried = 0
        stats = _Counter()
        with _counting(dag, "same-destination", n):
            while len(ok_a) < n or len(ok_b) < n:
                need_a = [j for j in range(n) if j not in ok_a]
                need_b = [j for j in range(n) if j not in ok_b]
                for j in sorted(set(need_a) | set(need_b)):
                    rounds[j] += 1
                for side, waiting, key_of in ((side_a, need_a, lambda c, e: (1 - c, e)),
                                              (side_b, need_b, lambda c, e: (c, 1 - e))):
                    for j in waiting:
                        queue = queues[key_of(*combos[j])]
                        if not queue:
                            self._guard(dag, "same_destination", stats, final=True)
                            raise ConfigError(
                                f"{dag} same_destination: only {min(len(ok_a), len(ok_b))} of {n} "
                                f"pairs passed the classifier checks after trying {tried} source "
                                "images; lower [pairs] n_same_destination or raise [pairs] alpha_steps")
                        side[j] = queue.popleft()
                        tried += 1
                # Every chunk of both sides at once (dealt over the ranks when they share the work),
                # then the bookkeeping in chunk order.
                chunks, jobs = [], []
                for side, waiting, attr, which, accepted in (
                        (side_a, need_a, cause, 0, ok_a), (side_b, need_b, effect, 1, ok_b)):
                    for start in range(0, len(waiting), self.config.batch):
                        chunk = waiting[start:start + self.config.batch]
                        idx = np.array([side[j] for j in chunk], dtype=np.int64)
                        targets = np.array([combos[j][which] for j in chunk], dtype=np.int64)
                        chunks.append((chunk, idx, accepted))
                        jobs.append(self._plan(idx, attr, targets))
                for (chunk, idx, accepted), m in zip(chunks, self._run(jobs), strict=True):
                    stats.add(m)
                    for k, j in enumerate(chunk):
                        if m.ok[k] and self._source_ok(int(idx[k]), stats):
                            accepted[j] = (_take(m, k), self.store.add(self.images[idx[k]]),
                                           self.store.add(m.images[k]))
        for j in range(n):
            a, b = side_a[j], side_b[j]
            (ma, src_a, img_a), (mb, src_b, img_b) = ok_a[j], ok_b[j]
            result.rows.append(self._row(dag, cause, effect, "same_destination", a, b,
                                         (src_a, src_b, img_a, img_b), ma, 0, mb, 0,
                                         int(rounds[j])))
            result.sheet_rows.append([self.images[a], ma.images[0], self.images[b], mb.images[0]])
            result.sheet_labels.append(
                f"-> {cause.name}={combos[j][0]}, {effect.name}={combos[j][1]}")
        self._guard(dag, "same_destination", stats, final=True)
        result.stats = stats.summary(n, tried, 2 * n)
        return result

    def _source_ok(self, index: int, stats: _Counter) -> bool:
        """Whether pool image ``index`` may be a pair's source: real images always; decoded
        ones (:class:`cage.labels.pool.DecodedImages`) only when their decode was valid (a
        refused one counts as an invalid image, and another source is tried)."""
        valid = getattr(self.images, "valid", None)
        if valid is None:
            return True
        stats.decoded += 1
        if valid(index):
            return True
        stats.invalid += 1
        return False

    def _guard(self, dag: str, setting: str, stats: _Counter, *, final: bool) -> None:
        """End the run when more than ``[pairs] max_invalid_share`` of the images decoded for
        one DAG and setting were invalid (:func:`invalid_images`; none of them is ever written)."""
        share = stats.invalid / max(stats.decoded, 1)
        if stats.invalid and share > self.config.max_invalid_share:
            raise ConfigError(
                f"{self.generator_name}: {stats.invalid} of {stats.decoded} images decoded for "
                f"the {dag} {setting} pairs ({share:.1%}) held NaN, infinite or out-of-range "
                f"values (outside [0, 1]), more than [pairs] max_invalid_share = "
                f"{self.config.max_invalid_share:g}; no pair was written from them: fix the "
                "generator's decode, or raise max_invalid_share to accept the loss")

    # ------------------------------------------------------------------ rows

    def _row(self, dag: str, cause: LinearAttribute, effect: LinearAttribute, setting: str,
             src_c: int, src_e: int, names: tuple[str, str, str, str], mc: Manipulation, kc: int,
             me: Manipulation, ke: int, attempts: int) -> dict[str, Any]:
        """One pairs.csv row; ``names`` are the file names of the cause's source, the effect's
        source, the cause-manipulated and the effect-manipulated image, ``mc[kc]`` and ``me[ke]``
        the two manipulations."""
        return {
            "pair_id": "",
            "dag": dag,
            "cause": cause.name,
            "effect": effect.name,
            "setting": setting,
            "source_cause_id": int(self.ids[src_c]),
            "source_effect_id": int(self.ids[src_e]),
            "image_source_cause": names[0],
            "image_source_effect": names[1],
            "image_cause": names[2],
            "image_effect": names[3],
            "target_cause": int(mc.target[kc]),
            "target_effect": int(me.target[ke]),
            "alpha_cause": f"{mc.alpha[kc]:.4f}",
            "alpha_effect": f"{me.alpha[ke]:.4f}",
            "check_cause": f"{mc.check[kc]:.4f}",
            "check_effect": f"{me.check[ke]:.4f}",
            "ok_cause": int(mc.ok[kc]),
            "ok_effect": int(me.ok[ke]),
            "attempts": attempts,
        }


def _counting(dag: str, setting: str, n: int) -> Any:
    """The progress bar of one DAG and setting: images decoded, at least two per pair (more when
    alpha is escalated or a source is replaced)."""
    return progress.counting(2 * n, f"{dag} {setting} pairs: images decoded (at least {2 * n})",
                             "image")


def _take(m: Manipulation, k: int) -> Manipulation:
    return Manipulation(images=m.images[k:k + 1], alpha=m.alpha[k:k + 1], check=m.check[k:k + 1],
                        ok=m.ok[k:k + 1], tries=m.tries[k:k + 1], target=m.target[k:k + 1],
                        invalid=m.invalid[k:k + 1])


class _Counter:
    """Success statistics of the manipulations (first alpha, after escalation) and replacements."""

    def __init__(self) -> None:
        self.total = 0
        self.first = 0
        self.passed = 0
        self.decoded = 0
        self.invalid = 0

    def add(self, *ms: Manipulation) -> None:
        for m in ms:
            self.total += len(m.ok)
            self.first += int(np.sum(m.ok & (m.tries == 1)))
            self.passed += int(np.sum(m.ok))
            self.decoded += int(np.sum(m.tries))
            self.invalid += int(np.sum(m.invalid))

    def summary(self, n: int, tried: int, needed: int) -> dict[str, Any]:
        return {
            "pairs": n,
            "source_images_tried": tried,
            "manipulations": self.total,
            "success_first_alpha": round(self.first / max(self.total, 1), 4),
            "success_after_escalation": round(self.passed / max(self.total, 1), 4),
            "replaced_sources": tried - needed,
            "decoded_images": self.decoded,
            "invalid_images": self.invalid,
        }


def number_pairs(sets: Sequence[PairSet]) -> list[dict[str, Any]]:
    """Give every row a run-wide opaque id ``p0001``, ``p0002``, ... in order; return all rows."""
    rows = []
    for s in sets:
        for row in s.rows:
            row["pair_id"] = f"p{len(rows) + 1:04d}"
            rows.append(row)
    return rows
