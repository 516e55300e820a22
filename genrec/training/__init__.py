"""The shared training loop (:func:`fit`), the data side of a run (:func:`experiment`), checkpoints."""

from genrec.training.arrays import ArrayDataset
from genrec.training.experiment import Experiment, experiment
from genrec.training.distributed import single_process
from genrec.training.loop import fit, lr_lambda, peak_memory, seed_everything

__all__ = ["ArrayDataset", "Experiment", "experiment", "fit", "lr_lambda", "peak_memory", "seed_everything",
           "single_process"]
