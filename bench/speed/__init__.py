"""Speed: inference, training and UI timings on the CPU (``python -m bench.speed.benchmark``), on a CUDA GPU
(``bench.speed.gpu``), the training roofline and the memory of loading training data."""
