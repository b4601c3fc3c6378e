"""Segmentation files of the tools annotators use elsewhere: 3D Slicer .seg.nrrd and DICOM SEG."""
