"""Modal's own view of an Image: each layer's Dockerfile commands and context files.

An `Image` is a chain of lazily loaded layers; what a layer sends to Modal's builder is what
its `dockerfile_function` returns for the image builder version (modal/_image.py::
_Image._from_args, whose `_load` closure holds `dockerfile_function` and `base_images` and
reads each context file when the image is loaded). A layer from `add_local_*`
(`_Image._add_mount_layer_or_copy`) adds files at container start, no build step. Reading
the closures runs modal's own code, so a test sees the commands a deploy would send.

Imports nothing but modal: tests run its source with `python -S -c` beside an installed
wheel (tests/modal_burst/test_image_lock.py), and tests/modal_standin.py imports it.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def builder_version() -> str:
    """The image builder version in force: the local config's (MODAL_IMAGE_BUILDER_VERSION or
    ~/.modal.toml), else the workspace's, which only the server knows; its latest is assumed
    (modal/_image.py::_get_image_builder_version, LATEST_IMAGE_BUILDER_VERSION)."""
    from modal._image import LATEST_IMAGE_BUILDER_VERSION
    from modal.config import config

    return str(config.get("image_builder_version") or LATEST_IMAGE_BUILDER_VERSION)


def _cells(function: Any) -> dict[str, Any]:
    closure = function.__closure__ or ()
    return dict(zip(function.__code__.co_freevars, (c.cell_contents for c in closure), strict=True))


def dockerfile_layers(image: Any, version: str | None = None) -> list[dict[str, Any]]:
    """Base layer first: {"commands": [...], "context_files": {context path: local path}}."""
    from modal._utils.async_utils import synchronizer

    version = version or builder_version()
    layers: list[dict[str, Any]] = []
    layer = synchronizer._translate_in(image)  # the _Image behind modal.Image
    while layer is not None:
        cells = _cells(layer._load)
        if "dockerfile_function" in cells:  # _Image._from_args
            build = cells["dockerfile_function"]
            if build is not None:
                spec = build(version)
                layers.append(
                    {"commands": list(spec.commands), "context_files": dict(spec.context_files)}
                )
            bases = list(cells["base_images"].values())
            assert len(bases) <= 1, f"an image with several bases: {layer!r}"
            layer = bases[0] if bases else None
        elif "base_image" in cells:  # _Image._add_mount_layer_or_copy: no build step
            layer = cells["base_image"]
        else:
            raise AssertionError(f"an image layer this reader does not know: {layer!r}")
    return layers[::-1]


if __name__ == "__main__":  # python -S -c SOURCE MODULE: the layers of MODULE.image, as JSON
    import importlib

    module = importlib.import_module(sys.argv[1])
    print(json.dumps({"file": module.__file__, "layers": dockerfile_layers(module.image)}))
