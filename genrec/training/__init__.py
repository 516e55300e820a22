"""The shared training loop (:func:`fit`), the data side of a run (:func:`experiment`), checkpoints."""

from genrec.training.arrays import ArrayDataset
from genrec.training.experiment import Experiment, experiment
from genrec.training.distributed import single_process
from genrec.training.loop import fit, lr_lambda, seed_everything
from genrec.training.measures import peak_memory

__all__ = ["ArrayDataset", "Experiment", "experiment", "fit", "lr_lambda", "peak_memory", "seed_everything",
           "single_process"]
