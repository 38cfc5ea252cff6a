"""Bottom-up-attention region-feature extraction (Faster R-CNN R101-C4, Visual Genome).

`BUTDDetector` (detector.py) composes the backbone, RPN, RoI heads and attribute head;
`weights.load_weights` reads the upstream pickles; `images` lists and decodes the images as
`cv2.imread` did; `selection.select_regions` picks the boxes as vilio did;
`extract.extract_images` runs one detector pass per image into the stores of every variant
given (`hm_shared.features`); `cli` is the direct command behind `docker compose run extract`.
"""
