"""napari plugin of medlsam-napari: reader, writer, sample data and the annotator dock."""

__version__ = "0.1.0"
