"""Where this replica sits in the cluster, and the ``tf.distribute`` strategy to use.

Vertex AI describes the cluster in ``CLUSTER_SPEC`` with worker pools (``workerpool0`` the
primary, ``1`` workers, ``2`` parameter servers / reduction servers, ``3`` evaluators);
TensorFlow wants ``TF_CONFIG`` with ``chief`` / ``worker`` / ``ps`` / ``evaluator``. When only
``CLUSTER_SPEC`` is set it is converted and exported as ``TF_CONFIG`` before TensorFlow
builds a strategy.

Strategy: several workers -> MultiWorkerMirroredStrategy; one machine with several GPUs ->
MirroredStrategy; otherwise the default strategy (one CPU or GPU, no config needed).

Example:
    >>> cluster = Cluster.from_env()  # doctest: +SKIP
    >>> strategy = cluster.strategy()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from jobcommon.errors import UsageError

log = logging.getLogger(__name__)

POOL_ROLES = {
    "workerpool0": "chief",
    "workerpool1": "worker",
    "workerpool2": "ps",
    "workerpool3": "evaluator",
}


def cluster_spec_to_tf_config(spec: Mapping) -> dict:
    """Convert Vertex's ``CLUSTER_SPEC`` to TensorFlow's ``TF_CONFIG``.

    Example:
        >>> cluster_spec_to_tf_config({"cluster": {"workerpool0": ["a:1"], "workerpool1":
        ...     ["b:2"]}, "task": {"type": "workerpool1", "index": 0}})
        {'cluster': {'chief': ['a:1'], 'worker': ['b:2']}, 'task': {'type': 'worker', 'index': 0}}
    """
    try:
        cluster = {
            POOL_ROLES[pool]: list(hosts)
            for pool, hosts in spec["cluster"].items()
            if hosts and pool in POOL_ROLES
        }
        task = spec["task"]
        return {
            "cluster": cluster,
            "task": {"type": POOL_ROLES[task["type"]], "index": int(task.get("index", 0))},
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"CLUSTER_SPEC is not a valid cluster spec ({exc!r})") from exc


def _load_json_env(name: str, env: Mapping[str, str]) -> dict | None:
    text = env.get(name)
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{name} is not valid JSON ({exc}): {text[:200]!r}") from exc


@dataclass
class Cluster:
    """This replica's role: ``task_type`` chief/worker/ps/evaluator and ``task_index``."""

    spec: dict[str, list[str]] = field(default_factory=dict)
    task_type: str = "chief"
    task_index: int = 0
    tf_config: dict | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, export: bool = True) -> Cluster:
        """Read ``TF_CONFIG``, else ``CLUSTER_SPEC`` (exported as ``TF_CONFIG`` if ``export``)."""
        env = os.environ if env is None else env
        tf_config = _load_json_env("TF_CONFIG", env)
        if tf_config is None:
            cluster_spec = _load_json_env("CLUSTER_SPEC", env)
            if cluster_spec is not None:
                tf_config = cluster_spec_to_tf_config(cluster_spec)
                if export and len(_workers(tf_config.get("cluster", {}))) > 1:
                    os.environ["TF_CONFIG"] = json.dumps(tf_config)
        if not tf_config or not tf_config.get("cluster"):
            return cls()
        task = tf_config.get("task", {})
        return cls(
            spec=tf_config["cluster"],
            task_type=task.get("type", "chief"),
            task_index=int(task.get("index", 0)),
            tf_config=tf_config,
        )

    @property
    def num_workers(self) -> int:
        return max(1, len(_workers(self.spec)))

    @property
    def is_chief(self) -> bool:
        """The chief, or worker 0 when the cluster has no chief; a lone process is chief."""
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_index == 0 and "chief" not in self.spec

    @property
    def label(self) -> str:
        return f"{self.task_type}-{self.task_index}"

    def strategy(self):
        """The ``tf.distribute`` strategy for this cluster and this machine's GPUs."""
        import tensorflow as tf

        if self.task_type in ("ps", "evaluator"):
            raise UsageError(
                f"this replica is a {self.task_type}: the trainer runs synchronous "
                "data-parallel training and needs no parameter servers or evaluators; "
                "remove worker pools 2 and 3 from the job"
            )
        if self.num_workers > 1:
            log.info(
                "MultiWorkerMirroredStrategy over %d workers (%s)", self.num_workers, self.label
            )
            return tf.distribute.MultiWorkerMirroredStrategy()
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) > 1:
            log.info("MirroredStrategy over %d GPUs", len(gpus))
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()


def _workers(spec: Mapping) -> list[str]:
    return list(spec.get("chief", [])) + list(spec.get("worker", []))


def keras_tuner_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``KERASTUNER_*`` variables for a distributed keras-tuner search from ``CLUSTER_SPEC``.

    The primary (workerpool0) serves the oracle on its host and port; every other replica
    is a tuner worker. Returns ``{}`` for a single replica or when they are already set.

    Example:
        >>> spec = {"cluster": {"workerpool0": ["h:2222"], "workerpool1": ["w:2222"]},
        ...         "task": {"type": "workerpool1", "index": 0}}
        >>> keras_tuner_env({"CLUSTER_SPEC": json.dumps(spec)})["KERASTUNER_ORACLE_IP"]
        'h'
    """
    env = os.environ if env is None else env
    if env.get("KERASTUNER_TUNER_ID"):
        return {}
    spec = _load_json_env("CLUSTER_SPEC", env)
    tf_config = cluster_spec_to_tf_config(spec) if spec else _load_json_env("TF_CONFIG", env)
    if not tf_config or len(_workers(tf_config.get("cluster", {}))) < 2:
        return {}
    cluster = tf_config["cluster"]
    oracle = (cluster.get("chief") or cluster["worker"])[0]
    host, _, port = oracle.rpartition(":")
    task = tf_config["task"]
    is_chief = task["type"] == "chief" or ("chief" not in cluster and task["index"] == 0)
    tuner_id = "chief" if is_chief else f"tuner-{task['type']}-{task['index']}"
    return {
        "KERASTUNER_TUNER_ID": tuner_id,
        "KERASTUNER_ORACLE_IP": host,
        "KERASTUNER_ORACLE_PORT": port,
    }


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
