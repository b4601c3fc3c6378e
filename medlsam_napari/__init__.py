"""napari plugin of medlsam-napari: reader, writer, sample data and the annotator dock."""

import sys

__version__ = "0.1.0"

# Mesa's software OpenGL (llvmpipe: Xvfb, VMs, remote desktops) links its own LLVM, and triton's native
# module (pulled in by torchvision -> torch._dynamo) links another: importing triton once napari's canvas
# exists segfaults the process. Our models never use triton (no torch.compile), so in the GUI torch is
# told it is absent; torch then simply reports "no triton". Where it was imported already, nothing changes.
if "triton" not in sys.modules:
    sys.modules["triton"] = None  # type: ignore[assignment]
