"""ERNIE-ViL (ES / EL) on PaddlePaddle 2.6 dynamic graph."""
