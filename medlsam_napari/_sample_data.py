"""npe2 sample data: the project's own SYNTHETIC abdominal CT phantom with its labels."""

from __future__ import annotations

from typing import Any

from medlsam_training.volumes.phantom import make_phantom

from .layer_geometry import layer_kwargs


def make_phantom_sample(seed: int = 0) -> list[tuple[Any, dict[str, Any], str]]:
    ph = make_phantom(seed)
    image_kwargs = layer_kwargs(ph.image, f"phantom_{seed:03d} (SYNTHETIC CT)")
    label_kwargs = layer_kwargs(ph.label, f"phantom_{seed:03d} labels", labels=True)
    label_kwargs["metadata"]["label_names"] = {str(k): v for k, v in ph.label_names.items()}
    return [(ph.image.array, image_kwargs, "image"), (ph.label.array, label_kwargs, "labels")]
