"""HIT items: which two images each HIT shows, where, and what the local blinding map records.

One HIT shows two images, top and bottom (docs/method.md §7). For a counterfactual pair the
two images are the one made by manipulating the cause and the one made by manipulating the effect;
which of them goes on top is drawn at random per HIT but *counterbalanced* within each
(DAG, setting): exactly half of the pairs of a cell show the cause on top (one extra either way when
the cell is odd). Attention checks show a clean image against a visibly corrupted copy of it, and the
expected answer is the clean one.

The mapping (item -> pair, roles of the top and bottom image) lives only in ``RUN/hit_items.csv``;
pages see nothing but an opaque ``item_id`` and two opaque image file names.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image

from cage_eval import files, runs
from cage_eval.errors import ConfigError, RunDirError

KINDS = ("pair", "attention")
PAIR_ROLES = runs.ROLES  # ("cause", "effect")
ATTENTION_ROLES = ("clean", "corrupt")


@dataclass(frozen=True)
class HitItem:
    """One HIT: fields in ``runs.HIT_ITEMS_COLUMNS`` order, all strings (as stored in CSV).

    ``item_id`` is opaque: ``'h'`` + 15 hex characters of sha256(run_id|pair_id-or-attention-k|seed).
    ``kind`` is ``pair`` or ``attention``; ``pair_id``, ``dag`` and ``setting`` are empty for
    attention checks. ``image_top`` / ``image_bottom`` are file names inside ``RUN/images``.
    ``role_top`` / ``role_bottom`` are ``cause``/``effect`` or ``clean``/``corrupt``; ``expected``
    is the correct answer (``top``/``bottom``) of an attention check and empty for pairs.
    """

    item_id: str
    kind: str
    pair_id: str
    dag: str
    setting: str
    image_top: str
    image_bottom: str
    role_top: str
    role_bottom: str
    expected: str

    def role_of(self, choice: str) -> str:
        """The role of the image a worker chose (``choice`` is ``top`` or ``bottom``)."""
        if choice == "top":
            return self.role_top
        if choice == "bottom":
            return self.role_bottom
        raise ValueError(f"choice must be 'top' or 'bottom', got {choice!r}")


assert tuple(f.name for f in fields(HitItem)) == runs.HIT_ITEMS_COLUMNS


def item_id_for(run_id: str, key: str, seed: int) -> str:
    """The opaque item id: ``'h'`` + 15 hex chars of sha256(``run_id|key|seed``)."""
    return "h" + hashlib.sha256(f"{run_id}|{key}|{seed}".encode()).hexdigest()[:15]


def _rng(*parts: object) -> np.random.Generator:
    """A generator seeded from a stable hash of ``parts`` (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def balanced_tops(n: int, rng: np.random.Generator) -> list[bool]:
    """``n`` booleans (True = first option on top) with counts differing by at most one, shuffled.

    When ``n`` is odd the extra one is drawn at random, so no side is favoured overall.
    """
    tops = [True] * (n // 2) + [False] * (n // 2)
    if n % 2:
        tops.append(bool(rng.integers(2)))
    order = rng.permutation(n)
    return [tops[i] for i in order]


# --------------------------------------------------------------------------- pairs.csv


def read_pairs(run_dir: Path) -> list[dict[str, str]]:
    """Read and check ``RUN/pairs.csv``: columns, settings, and that every shown image exists."""
    path = runs.require_file(run_dir, runs.PAIRS, made_by=f"cage-eval generate --out {run_dir}")
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc}); regenerate the run") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in runs.PAIRS_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise RunDirError(f"{path}: missing column(s) {', '.join(missing)}; regenerate the run")
    rows = list(reader)
    if not rows:
        raise RunDirError(f"{path}: has no pairs; a run needs counterfactual pairs before HITs "
                          "can be made (run `cage-eval generate` with the image experiment)")
    images = Path(run_dir) / runs.IMAGES_DIR
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        where = f"{path}: row {line}"
        if not row["pair_id"]:
            raise RunDirError(f"{where}: field pair_id is empty")
        if row["pair_id"] in seen:
            raise RunDirError(f"{where}: pair_id {row['pair_id']!r} is repeated")
        seen.add(row["pair_id"])
        if row["setting"] not in runs.SETTINGS:
            raise RunDirError(f"{where}: field setting is {row['setting']!r} "
                              f"(expected one of {', '.join(runs.SETTINGS)})")
        if not row["dag"]:
            raise RunDirError(f"{where}: field dag is empty")
        for field in ("image_cause", "image_effect"):
            name = row[field]
            if not name or Path(name).name != name or not (images / name).is_file():
                raise RunDirError(f"{where}: field {field} is {name!r}, which is not a file in "
                                  f"{images}; regenerate the run")
        if row["image_cause"] == row["image_effect"]:
            raise RunDirError(f"{where}: image_cause and image_effect are the same file "
                              f"{row['image_cause']!r}; the pair cannot be judged")
    return rows


# --------------------------------------------------------------------------- attention checks


#: Shares of the pixels overwritten with noise among which :func:`corrupt_image` picks.
NOISE_SHARES = tuple(np.linspace(0.0, 1.0, 17))


def _damage(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A coarse mosaic of the image (cells of a seventh of its side) with random blocks over ~30%
    of the area, each inverted or solid in the colour farthest from what it covers."""
    h, w = arr.shape[:2]
    cell = max(2, min(h, w) // 7)
    out = arr.copy()
    for y in range(0, h, cell):
        for x in range(0, w, cell):
            out[y:y + cell, x:x + cell] = arr[y:y + cell, x:x + cell].mean(axis=(0, 1))
    block = max(2, min(h, w) // 5)
    n_blocks = max(3, int(0.3 * h * w / block**2))
    for _ in range(n_blocks):
        y, x = int(rng.integers(0, max(1, h - block + 1))), int(rng.integers(0, max(1, w - block + 1)))
        region = out[y:y + block, x:x + block]
        solid = 0.0 if region.mean() > 127.5 else 255.0
        out[y:y + block, x:x + block] = 255.0 - region if rng.integers(2) else solid
    return out


def corrupt_image(image: Image.Image | np.ndarray, rng: np.random.Generator, *,
                  target_bytes: int | None = None, scale: int = 1) -> np.ndarray:
    """A visibly corrupted copy: a coarse mosaic of the image with random solid or inverted blocks
    over ~30% of the area, and Gaussian noise (sd 90 of 255) over a share of the pixels.

    Deliberately unmistakable (an attention check must have one right answer), and the same size
    and channels as the clean image. Without ``target_bytes`` every pixel gets noise; with it,
    the noise share (one of :data:`NOISE_SHARES`) is chosen so that the file
    (:func:`cage.pairs.images.encode_png` at ``scale``) is as close as possible to ``target_bytes``:
    noise makes a PNG larger and the mosaic smaller, so the file size says nothing about which
    image is the damaged one. Returns uint8 pixels ``(H, W)`` or ``(H, W, 3)``.
    """
    from cage.pairs.images import encode_png

    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB" if image.mode in ("RGB", "RGBA", "P") else "L"))
    arr = np.asarray(image, dtype=float)
    damaged = _damage(arr, rng)
    noise = rng.normal(0.0, 90.0, size=arr.shape)
    order = rng.permutation(arr.shape[0] * arr.shape[1])
    best: tuple[float, np.ndarray] | None = None
    for share in (NOISE_SHARES if target_bytes is not None else (1.0,)):
        mask = np.zeros(order.size, dtype=bool)
        mask[order[:round(share * order.size)]] = True
        mask = mask.reshape(arr.shape[:2])
        candidate = damaged.copy()
        candidate[mask] += noise[mask]
        pixels = np.clip(candidate, 0, 255).astype(np.uint8)
        miss = 0.0 if target_bytes is None else abs(len(encode_png(pixels, scale=scale))
                                                     - target_bytes)
        if best is None or miss < best[0]:
            best = (miss, pixels)
    assert best is not None
    return best[1]


def _source_pixels(run_dir: Path, name: str) -> tuple[np.ndarray, int]:
    """The checked pixels of ``images/<name>`` before enlargement, and the enlargement."""
    from cage.pairs.images import enlargement
    from hitgen.hosting import read_image

    data, _ = read_image(run_dir, name)
    with Image.open(io.BytesIO(data)) as im:
        pixels = np.asarray(im, dtype=np.uint8)
    return enlargement(pixels)


def _shifted(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image moved by one or two pixels in a random direction (edges repeated): a new file
    of the same kind, so the clean image of a check is not a repeat of a pair's image."""
    h, w = pixels.shape[:2]
    dy, dx = 0, 0
    while (dy, dx) == (0, 0):
        dy, dx = (int(v) for v in rng.integers(-2, 3, size=2))
    pad = [(2, 2), (2, 2)] + [(0, 0)] * (pixels.ndim - 2)
    padded = np.pad(pixels, pad, mode="edge")
    return padded[2 - dy:2 - dy + h, 2 - dx:2 - dx + w]


def _attention_pair(run_dir: Path, source_name: str, rng: np.random.Generator,
                    size_gap: int, new_images: dict[str, bytes]) -> tuple[str, str]:
    """(clean, corrupt) file names for one attention check made from the pair image
    ``images/source_name``; their bytes are added to ``new_images``.

    The clean image is the pair image shifted by a pixel or two (generated like every pair
    image, so it looks and weighs like one, but not a repeat); the corrupt one is a damaged copy
    made ``size_gap`` bytes larger (as near as the noise levels allow). Both go through the run's
    own encoder (:func:`cage.pairs.images.encode_png`, the same settings and enlargement as the pair
    images) and get its content-hash names, so neither the name nor any byte of the file tells
    an attention check from a pair.
    """
    from cage.pairs.images import encode_png, image_name

    pixels, scale = _source_pixels(run_dir, source_name)
    clean = _shifted(pixels, rng)
    clean_png = encode_png(clean, scale=scale)
    corrupt = corrupt_image(clean, rng, target_bytes=len(clean_png) + size_gap, scale=scale)
    names = []
    for image in (clean, corrupt):
        names.append(image_name(image, scale=scale))
        new_images[names[-1]] = encode_png(image, scale=scale)
    return names[0], names[1]


def _file_size(images: Path, name: str) -> int:
    try:
        return os.lstat(images / name).st_size
    except OSError:  # reported when the file is read
        return 0


def _size_gaps(images: Path, items: list[HitItem]) -> list[int]:
    """Byte differences between the two images of each pair item (both signs): the gaps an
    attention check's two files should show too."""
    gaps = []
    for it in items:
        gap = _file_size(images, it.image_top) - _file_size(images, it.image_bottom)
        gaps += [gap, -gap]
    return gaps or [0]


def _attention_items(run_dir: Path, run_id: str, seed: int, pair_items: list[HitItem],
                     n_attention: int) -> tuple[list[HitItem], dict[str, bytes]]:
    """``n_attention`` attention items (clean on top in half of them) and their new images,
    made from the pair images (each used once before any is used again)."""
    images = run_dir / runs.IMAGES_DIR
    rng = _rng(run_id, seed, "attention")
    shown = sorted({n for it in pair_items for n in (it.image_top, it.image_bottom)})
    order = np.concatenate([rng.permutation(len(shown))
                            for _ in range(-(-n_attention // len(shown)))])
    clean_tops = balanced_tops(n_attention, rng)
    gaps = _size_gaps(images, pair_items)
    items, new_images = [], {}
    for k, clean_top in enumerate(clean_tops):
        k_rng = _rng(run_id, seed, "corrupt", k)
        gap = gaps[int(k_rng.integers(len(gaps)))]
        clean, corrupt = _attention_pair(run_dir, shown[int(order[k])], k_rng, gap, new_images)
        top, bottom = (clean, corrupt) if clean_top else (corrupt, clean)
        items.append(HitItem(
            item_id=item_id_for(run_id, f"attention-{k}", seed), kind="attention", pair_id="",
            dag="", setting="", image_top=top, image_bottom=bottom,
            role_top="clean" if clean_top else "corrupt",
            role_bottom="corrupt" if clean_top else "clean",
            expected="top" if clean_top else "bottom",
        ))
    return items, new_images


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class HitPlan:
    """HIT items before anything is written: the items and the attention images they need."""

    items: list[HitItem]
    new_images: dict[str, bytes]

    def write_images(self, run_dir: Path) -> int:
        """Write the attention images into ``RUN/images`` (skipping identical files); return count."""
        images = Path(run_dir) / runs.IMAGES_DIR
        written = 0
        for name, data in sorted(self.new_images.items()):
            path = images / name
            if not path.is_file() or path.read_bytes() != data:
                files.atomic_write_bytes(path, data)
                written += 1
        return written


def build_hit_items(run_dir: Path, *, seed: int = 0, attention_rate: float = 0.0) -> list[HitItem]:
    """Build the HIT items of a run and write the attention images they need into ``RUN/images``.

    See :func:`plan_hit_items` for the parameters; this is ``plan_hit_items`` followed by
    ``HitPlan.write_images``.
    """
    plan = plan_hit_items(run_dir, seed=seed, attention_rate=attention_rate)
    plan.write_images(run_dir)
    return plan.items


def plan_hit_items(run_dir: Path, *, seed: int = 0, attention_rate: float = 0.0) -> HitPlan:
    """Plan the HIT items of a run: one per pair plus attention checks, in a shuffled order.

    Nothing is written; the attention images are returned as bytes in ``HitPlan.new_images``.

    Parameters
    ----------
    run_dir : a complete run directory (``manifest.json``, ``pairs.csv``, ``images/``).
    seed : placement seed; the same (run, seed, attention_rate) gives the same items, byte for byte.
    attention_rate : attention checks per pair item, in [0, 1]; ``0.1`` adds one check per ten
        pairs (rounded, at least one when positive). Their clean and corrupted images get
        content-derived names, like the run's own.

    Returns
    -------
    HitPlan whose items are counterbalanced within each (dag, setting): ``cause`` on top for
    exactly half of a cell's pairs (odd cells: one extra on a random side).
    """
    run_dir = Path(run_dir)
    if not 0.0 <= attention_rate <= 1.0:
        raise ConfigError(f"attention rate {attention_rate!r} is outside [0, 1]; use e.g. 0.1 "
                          "for one attention check per ten pairs")
    manifest = runs.read_manifest(run_dir)
    run_id = str(manifest.get("run_id") or "")
    if not run_id:
        raise RunDirError(f"{run_dir / runs.MANIFEST}: field run_id is missing; regenerate the run")
    if manifest.get("complete") is not True:
        raise RunDirError(f"{run_dir / runs.MANIFEST}: the run is not complete; rerun "
                          "`cage-eval generate` before making HITs")
    pairs = read_pairs(run_dir)

    cells: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in pairs:
        cells[(row["dag"], row["setting"])].append(row)
    items: list[HitItem] = []
    for (dag, setting), rows in sorted(cells.items()):
        rows = sorted(rows, key=lambda r: r["pair_id"])
        tops = balanced_tops(len(rows), _rng(run_id, seed, "placement", dag, setting))
        for row, cause_top in zip(rows, tops, strict=True):
            order = ("cause", "effect") if cause_top else ("effect", "cause")
            items.append(HitItem(
                item_id=item_id_for(run_id, row["pair_id"], seed),
                kind="pair",
                pair_id=row["pair_id"],
                dag=dag,
                setting=setting,
                image_top=row[f"image_{order[0]}"],
                image_bottom=row[f"image_{order[1]}"],
                role_top=order[0],
                role_bottom=order[1],
                expected="",
            ))

    new_images: dict[str, bytes] = {}
    if attention_rate > 0:
        n_attention = max(1, round(attention_rate * len(pairs)))
        checks, new_images = _attention_items(run_dir, run_id, seed, list(items), n_attention)
        items.extend(checks)

    order = _rng(run_id, seed, "order").permutation(len(items))
    shuffled = [items[i] for i in order]
    ids = [it.item_id for it in shuffled]
    if len(set(ids)) != len(ids):  # 60 bits: a collision means repeated pair ids, caught above
        raise RunDirError(f"{run_dir}: two HIT items got the same item id; check pairs.csv")
    return HitPlan(shuffled, new_images)


# --------------------------------------------------------------------------- hit_items.csv


def write_hit_items(run_dir: Path, items: list[HitItem]) -> Path:
    """Write ``RUN/hit_items.csv`` atomically (columns ``runs.HIT_ITEMS_COLUMNS``); return its path."""
    path = Path(run_dir) / runs.HIT_ITEMS
    files.atomic_write_csv(path, (asdict(it) for it in items), runs.HIT_ITEMS_COLUMNS)
    return path


def read_hit_items(run_dir: Path) -> list[HitItem]:
    """Read and check ``RUN/hit_items.csv``; :class:`RunDirError` if missing or malformed."""
    path = runs.require_file(run_dir, runs.HIT_ITEMS, made_by=f"cage-eval hits {run_dir}")
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc}); rebuild it with `cage-eval hits`") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if tuple(reader.fieldnames or ()) != runs.HIT_ITEMS_COLUMNS:
        raise RunDirError(f"{path}: columns are {reader.fieldnames!r}, expected "
                          f"{list(runs.HIT_ITEMS_COLUMNS)}; rebuild it with `cage-eval hits`")
    items: list[HitItem] = []
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):
        if None in row or any(v is None for v in row.values()):
            raise RunDirError(f"{path}: row {line} has the wrong number of fields")
        item = HitItem(**row)
        _check_item(item, f"{path}: row {line}")
        if item.item_id in seen:
            raise RunDirError(f"{path}: row {line}: item_id {item.item_id!r} is repeated")
        seen.add(item.item_id)
        items.append(item)
    if not items:
        raise RunDirError(f"{path}: has no items; rebuild it with `cage-eval hits`")
    return items


def _check_item(item: HitItem, where: str) -> None:
    if not (len(item.item_id) == 16 and item.item_id[0] == "h"
            and all(c in "0123456789abcdef" for c in item.item_id[1:])):
        raise RunDirError(f"{where}: field item_id is {item.item_id!r} (expected 'h' + 15 hex)")
    if item.kind not in KINDS:
        raise RunDirError(f"{where}: field kind is {item.kind!r} (expected pair or attention)")
    roles = PAIR_ROLES if item.kind == "pair" else ATTENTION_ROLES
    if {item.role_top, item.role_bottom} != set(roles):
        raise RunDirError(f"{where}: roles {item.role_top!r}/{item.role_bottom!r} do not fit "
                          f"kind {item.kind!r} (expected {' and '.join(roles)})")
    if item.kind == "attention":
        want = "top" if item.role_top == "clean" else "bottom"
        if item.expected != want:
            raise RunDirError(f"{where}: field expected is {item.expected!r} (expected {want!r})")
    elif item.expected or not item.pair_id:
        raise RunDirError(f"{where}: a pair item needs a pair_id and an empty expected field")
    for field in ("image_top", "image_bottom"):
        name = getattr(item, field)
        if not name or Path(name).name != name:
            raise RunDirError(f"{where}: field {field} is {name!r} (expected a file name in images/)")
