"""A user's zuko normalizing flow as a CAGE generator (with its exact inverse as the encoder).

The flow is an unconditional ``zuko.flows.Flow`` (``flow()`` builds the distribution; base
``N(0, I)``), wrapped by :class:`cage.generators.flow.FlowGenerator`. A flow over images models
flattened pixels: ``image_shape = [C, H, W]`` reshapes its samples, and ``output_range`` /
``channels_last`` / ``clamp`` say how its values relate to ``[0, 1]`` images
(:class:`~cage.generators.output.OutputLayout`; ``encode`` receives images converted back).

Section keys (``adapter = "zuko_flow"``)::

    path = "flow.pt"                   # a whole flow saved with torch.save(flow, path) ...
    flow = "pkg.mod:make_flow"         # ... or a function/class called to build it
    flow_options = { features = 784 }
    weights = "flow_state.pt"          # optional state dict loaded into the built flow
    weights_key = "flow"               # optional entry of that file
    image_shape = [1, 28, 28]          # for image flows; omit for vector data
    output_range = [0, 1]
    channels_last = false
    clamp = false

``path`` is read with ``torch.load(weights_only=False)``: it unpickles code, so load only files you
trust (a state dict plus ``flow`` needs no unpickling of code). Plus ``device``, ``batch_size``,
``threads`` (:mod:`cage.generators.device`); zuko's inverse is sequential in the features, so
decoding a MAF costs ``features`` passes whatever the device.
"""

from __future__ import annotations

from typing import Any

import torch

from cage.config.sections import Section, call_with_options, import_object
from cage.generators.device import Compute, batched, freeze
from cage.generators.flow import FlowGenerator
from cage.generators.output import LayoutGenerator
from cage.generators.torch_module import layout_from, load_state
from cage_eval.errors import ConfigError, InputFileError


class DeviceFlowGenerator(FlowGenerator):
    """:class:`FlowGenerator` computing on ``compute.device`` in ``compute.batch_size`` rows,
    returning CPU float32."""

    def __init__(self, flow: torch.nn.Module, compute: Compute) -> None:
        super().__init__(flow.to(compute.device))
        freeze(self.flow)
        self.compute = compute
        self.batch_size = compute.batch_size
        self.device = str(compute.device)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return batched(lambda zb: FlowGenerator.decode(self, zb), torch.as_tensor(z),
                       self.compute)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return batched(lambda xb: FlowGenerator.encode(self, xb), torch.as_tensor(x),
                       self.compute)


def from_section(section: Section, compute: Compute) -> Any:
    """Build the adapter from ``[generator]`` (keys in the module docstring)."""
    if section.has("path") == section.has("flow"):
        raise ConfigError(f"{section.where()}: give exactly one of path = \"flow.pt\" (a saved "
                          "flow) or flow = \"module:callable\" (builds it)")
    if section.has("path"):
        path = section.path("path", what="save your flow there with torch.save(flow, path)")
        try:
            flow = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc:  # torch raises many types for a bad file
            raise InputFileError(f"{section.where('path')} = {str(path)!r}: cannot load the flow "
                                 f"({type(exc).__name__}: {str(exc)[:200]}); save it with "
                                 "torch.save(flow, path) with zuko installed") from None
    else:
        where = section.where("flow")
        flow = call_with_options(import_object(section.text("flow"), where),
                                 section.table("flow_options"), where)
    weights = section.path("weights", None, what="give the flow's state dict (torch.save("
                           "flow.state_dict(), path))")
    if weights is not None:
        load_state(flow, weights, section.text("weights_key", None), section.where("weights"))
    if not isinstance(flow, torch.nn.Module) or not callable(getattr(flow, "forward", None)):
        raise ConfigError(f"{section.where()}: the flow is a {type(flow).__name__}; expected a "
                          "zuko flow module (flow() returns the distribution)")
    try:
        with torch.no_grad():
            dist = flow()
        _ = dist.base.event_shape[0]
    except Exception as exc:  # not a zuko unconditional flow
        raise ConfigError(f"{section.where()}: flow() did not build an unconditional zuko "
                          f"distribution ({type(exc).__name__}: {exc}); give a zuko.flows.Flow "
                          "without context") from None
    layout = layout_from(section, resize=False)
    generator = DeviceFlowGenerator(flow, compute)
    if layout.shape is None and layout == type(layout)():
        return generator
    return LayoutGenerator(generator, layout)
