"""
Train one model on several processes with accelerate
====================================================

:func:`sklearn_mtl.distributed.data_parallel` trains one model data-parallel
over the processes of a Hugging Face ``accelerate`` launch: every process runs
this same script on the same data, trains on its slice of each batch, and the
whole batch's per-task losses (missing labels included) are formed across the
processes before the gradients are averaged. Every process ends with the same
model, the one a single process trains; the main process prints and saves it.

Run on two CPU processes (needs the ``distributed`` extra; about ten seconds)::

    torchrun --standalone --nproc_per_node 2 examples/accelerate_data_parallel.py

or on the GPUs of one machine, one process each, with ``device='cuda'``::

    accelerate launch --multi_gpu --num_processes 2 examples/accelerate_data_parallel.py

``python examples/accelerate_data_parallel.py`` runs it in one process.
"""

from accelerate import Accelerator

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl.datasets import make_patient_records
from sklearn_mtl.distributed import data_parallel


def main():
    X, Y = make_patient_records(n_samples=2000, missing_rate=0.2, random_state=0)
    # random_state: every process must draw the same weights, split and batch order.
    # batch_size is the global batch: each of 2 processes computes half of it.
    model = MultiTaskRegressorClassifier(hidden_layer_sizes=(64, 64), batch_size=128,
                                         max_epochs=20, random_state=0)
    with data_parallel(Accelerator(cpu=True)) as accelerator:
        model.fit(X, Y)
    if accelerator.is_main_process:
        scores = model.score_tasks(X, Y)
        print(f"{accelerator.num_processes} process(es), {model.n_epochs_} epochs; "
              + ", ".join(f"{task} {score:.3f}" for task, score in scores.items()))
    return model


if __name__ == "__main__":
    main()
