"""Error types raised on bad input; each message names the file (or object) and the problem."""

from __future__ import annotations


class MedLSAMError(Exception):
    """Base class of every error this project raises on purpose."""


class VolumeReadError(MedLSAMError, ValueError):
    """A file could not be read as a medical volume."""


class UnsupportedFormatError(VolumeReadError):
    """The file's extension names no format we read."""


class CorruptFileError(VolumeReadError):
    """The file exists but its content is truncated or malformed."""


class DimensionError(MedLSAMError, ValueError):
    """A volume is not 3D (a 2D image, a 4D series) where 3D is needed."""


class VolumeTooLargeError(MedLSAMError, ValueError):
    """A volume has more voxels than the configured limit."""


class NaNVoxelsError(MedLSAMError, ValueError):
    """A volume contains NaN or infinite voxels."""


class GeometryMismatchError(MedLSAMError, ValueError):
    """Two volumes that must share one voxel grid do not."""


class EmptyLabelError(MedLSAMError, ValueError):
    """A label map (or one requested label) has no foreground voxel."""


class DatasetError(MedLSAMError, ValueError):
    """A dataset folder has no usable image/label pairs or an unreadable label map."""


class OutputFolderError(MedLSAMError, OSError):
    """An output file or folder cannot be written (read-only, missing permission, full disk)."""
