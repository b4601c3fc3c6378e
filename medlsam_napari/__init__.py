"""napari plugin of medlsam-napari: reader, writer, sample data and the annotator dock."""

import sys

__version__ = "0.1.0"


def _import_torch_without_triton() -> None:
    """Import torch and torchvision while triton looks absent, then let triton be imported normally again.

    Mesa's software OpenGL (llvmpipe: Xvfb, VMs, remote desktops) links its own LLVM, and triton's native
    module (pulled in by torchvision -> torch._dynamo) links another: importing triton once napari's canvas
    exists segfaults the process. Our models never use triton (no torch.compile), so torch is imported
    once with triton hidden; afterwards the entry is removed, and any other plugin that imports triton
    itself gets it as usual. Where triton or torch was imported already, nothing changes.
    """
    if "triton" in sys.modules or "torch" in sys.modules:
        return
    sys.modules["triton"] = None  # type: ignore[assignment]
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    finally:
        if "triton" in sys.modules and sys.modules["triton"] is None:
            del sys.modules["triton"]


_import_torch_without_triton()
