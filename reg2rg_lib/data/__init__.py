"""Data: the RadGenome-ChestCT layout (real or embedded), the embedded benchmark, the paper's preprocessing.

    layout.py     find volumes, region masks and CSVs in the RadGenome-ChestCT layout; read its tables
    nifti.py      read/write NIfTI safely (checked reading, byte-reproducible writing)
    manifest.py   index a dataset (cases, splits, files, what was skipped and why) and write its manifest
    synth/        the embedded benchmark: a real CT -> N patients with known findings and reports
                  (`reg2rg synth`)
    resize.py     area resizing, mask blocks and bounding boxes (the fast core of prep)
    params.py     `PrepParams`: what determines the preprocessed tensors (their hash names a cache)
    prep.py       the paper's preprocessing, cached once per case (`reg2rg prepare`, `load_cache`)
    transforms.py the same preprocessing as MONAI dictionary transforms (what prep.py runs per case)
    ctrg.py       CTRG-Chest-548K's "other report" and prompt sentence
    views.py      figures and tables of the data (notebook 01)
    slices.py     CT slices with region overlays as RGB/PNG (windows, outlines; the explorer and Fig. 4 use
                  it)
    sources.py    volume sources: a dataset in the layout or a prep cache, as (volume, masks, spacing, report)
    importer.py   a user's CT (DICOM series, NIfTI, NRRD, MHA) -> one volume of the layout in HU
                  (`reg2rg import-ct`)
    segmentation.py  TotalSegmentator / SAT / label-map output -> the 10 region masks (`reg2rg regions`)

Splits: train, validation (train volumes listed in `validation_volumes.txt`: every choice is made on it) and
test.
"""
