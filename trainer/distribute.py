"""The ``tf.distribute`` strategy for this replica, and Keras multi-worker fixes.

Strategy: several workers -> MultiWorkerMirroredStrategy; one machine with several GPUs ->
MirroredStrategy; otherwise the default strategy (one CPU or GPU, no config needed). Where
the replica sits in the cluster is Vertex's business: :mod:`trainer.vertex_cluster`.

Example:
    >>> strategy = strategy_for(Cluster())  # doctest: +SKIP
"""

from __future__ import annotations

import logging

from jobcommon.errors import UsageError
from trainer.vertex_cluster import Cluster

log = logging.getLogger(__name__)


def strategy_for(cluster: Cluster, gpus: int):
    """The ``tf.distribute`` strategy for ``cluster`` on a machine with ``gpus`` GPUs."""
    import tensorflow as tf

    if cluster.task_type in ("ps", "evaluator"):
        raise UsageError(
            f"this replica is a {cluster.task_type}: the trainer runs synchronous "
            "data-parallel training and needs no parameter servers or evaluators; "
            "remove worker pools 2 and 3 from the job"
        )
    if cluster.num_workers > 1:
        log.info(
            "MultiWorkerMirroredStrategy over %d workers (%s)", cluster.num_workers, cluster.label
        )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if gpus > 1:
        log.info("MirroredStrategy over %d GPUs", gpus)
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def patch_keras_multi_worker(model) -> None:
    """Work around two Keras 3.15 faults that stop ``fit()`` under MultiWorkerMirroredStrategy.

    1. Before training, Keras builds the model from a first batch that it averages across
       replicas with ``strategy.reduce`` over the whole ``(features, label)`` structure,
       which MultiWorkerMirroredStrategy cannot reduce (keras-team/keras#20585, #20329).
       The build only needs shapes and dtypes, so this model's build takes each
       replica-local value instead.
    2. Each step's logs (scalars) are averaged with ``strategy.reduce("MEAN", v, axis=0)``,
       which fails on a scalar. For multi-worker runs they are averaged with ``axis=None``.

    Gradients are not affected: the optimizer all-reduces them as usual.
    """
    import tensorflow as tf
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return model.distribute_strategy.experimental_local_results(value)[0]
        return value

    def symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(local, next(it))
                break
        with model.distribute_strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = symbolic_build

    original = getattr(tf_trainer.reduce_per_replica, "__wrapped__", tf_trainer.reduce_per_replica)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
            strategy
        ):
            return tree.map_structure(
                lambda v: (
                    strategy.reduce("MEAN", v, axis=None)
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                values,
            )
        return original(values, strategy, reduction)

    reduce_per_replica.__wrapped__ = original
    tf_trainer.reduce_per_replica = reduce_per_replica
