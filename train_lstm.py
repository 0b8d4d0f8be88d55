"""Train, evaluate (-test) or run (-demo) the spherical ConvLSTM saliency model on frame sequences.

    python train_lstm.py -expID lstm1                     # the original's run (batch 24, lr 3e-3, sequences of 6)
    python train_lstm.py -expID lstm1 -resume
    torchrun --nproc_per_node 4 train_lstm.py ...
    python train_lstm.py -expID lstm1 -test
    python train_lstm.py -expID lstm1 -demo frames/       # a folder of frames is one sequence

The training, evaluation and demo code is ``train_unet.py``'s, which handles both models; see docs/training.md.
"""

import sys

from train_unet import main

if __name__ == "__main__":
    main(sys.argv[1:], model="convlstm")
