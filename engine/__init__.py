"""The parts of the training scripts that are not the training loop: ``common`` (checkpoints, datasets, precision),
``distributed`` (processes, global batch norm, CUDA graphs), ``evaluate`` (the honest test, shared with the demo)
and ``demo`` (saliency of images, folders of frames and videos)."""
