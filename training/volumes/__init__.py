"""Volumes on disk and in memory: reading and writing images and label maps (NIfTI, NRRD, DICOM series) with their
geometry, resampling, dataset folders and their cases, boxes in voxels, atomic writes, the synthetic phantom."""
