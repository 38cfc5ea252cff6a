"""Bottom-up-attention region-feature extraction (Faster R-CNN R101-C4, Visual Genome).

`BUTDDetector` (detector.py) composes the backbone, RPN, RoI heads and attribute head;
`weights.load_weights` reads the upstream pickles; `selection.select_regions` picks the boxes
as vilio did; `extract.extract_images` runs it all into a `hm_shared.features` store.
"""
