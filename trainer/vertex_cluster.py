"""Vertex AI's cluster description: ``CLUSTER_SPEC`` / ``TF_CONFIG``, this replica's role.

Vertex AI describes the cluster in ``CLUSTER_SPEC`` with worker pools (``workerpool0`` the
primary, ``1`` workers, ``2`` parameter servers / reduction servers, ``3`` evaluators);
TensorFlow wants ``TF_CONFIG`` with ``chief`` / ``worker`` / ``ps`` / ``evaluator``, and
keras-tuner's distributed mode wants ``KERASTUNER_*``. This module only parses and
converts; :func:`process_env` says which variables TensorFlow and keras-tuner (which read
``os.environ`` themselves) still need, and the trainer's entry point sets them once.

Example:
    >>> cluster = Cluster.from_env({})
    >>> cluster.is_chief, cluster.num_workers, cluster.label
    (True, 1, 'chief-0')
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from jobcommon.errors import UsageError

POOL_ROLES = {
    "workerpool0": "chief",
    "workerpool1": "worker",
    "workerpool2": "ps",
    "workerpool3": "evaluator",
}
KERASTUNER_VARIABLES = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


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


def is_chief(task_type: str, task_index: int, spec: Mapping) -> bool:
    """The chief, or worker 0 when the cluster has no chief; a lone process is chief.

    Example:
        >>> is_chief("worker", 0, {"worker": ["a:1", "b:1"]}), is_chief("worker", 0,
        ...     {"chief": ["c:1"], "worker": ["a:1"]})
        (True, False)
    """
    if task_type == "chief":
        return True
    return task_type == "worker" and task_index == 0 and "chief" not in spec


@dataclass(frozen=True)
class Cluster:
    """This replica's role: ``task_type`` chief/worker/ps/evaluator and ``task_index``.

    ``tf_config`` is the TensorFlow form; ``from_cluster_spec`` says it was converted from
    Vertex's ``CLUSTER_SPEC`` (so TensorFlow does not see it yet).
    """

    spec: dict[str, list[str]] = field(default_factory=dict)
    task_type: str = "chief"
    task_index: int = 0
    tf_config: dict | None = None
    from_cluster_spec: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Cluster:
        """Read ``TF_CONFIG``, else ``CLUSTER_SPEC``, from ``env`` (nothing is written)."""
        tf_config = _load_json_env("TF_CONFIG", env)
        converted = False
        if tf_config is None:
            cluster_spec = _load_json_env("CLUSTER_SPEC", env)
            if cluster_spec is not None:
                tf_config = cluster_spec_to_tf_config(cluster_spec)
                converted = True
        if not tf_config or not tf_config.get("cluster"):
            return cls()
        task = tf_config.get("task", {})
        return cls(
            spec=tf_config["cluster"],
            task_type=task.get("type", "chief"),
            task_index=int(task.get("index", 0)),
            tf_config=tf_config,
            from_cluster_spec=converted,
        )

    @property
    def num_workers(self) -> int:
        return max(1, len(_workers(self.spec)))

    @property
    def is_chief(self) -> bool:
        return is_chief(self.task_type, self.task_index, self.spec)

    @property
    def label(self) -> str:
        return f"{self.task_type}-{self.task_index}"


def _workers(spec: Mapping) -> list[str]:
    return list(spec.get("chief", [])) + list(spec.get("worker", []))


def keras_tuner_env(cluster: Cluster) -> dict[str, str]:
    """``KERASTUNER_*`` variables for a distributed keras-tuner search over ``cluster``.

    The primary (workerpool0) serves the oracle on its host and port; every other replica
    is a tuner worker. Returns ``{}`` for a single replica.

    Example:
        >>> spec = {"cluster": {"workerpool0": ["h:2222"], "workerpool1": ["w:2222"]},
        ...         "task": {"type": "workerpool1", "index": 0}}
        >>> keras_tuner_env(Cluster.from_env({"CLUSTER_SPEC": json.dumps(spec)}))
        {'KERASTUNER_TUNER_ID': 'tuner-worker-0', 'KERASTUNER_ORACLE_IP': 'h', \
'KERASTUNER_ORACLE_PORT': '2222'}
    """
    if cluster.num_workers < 2:
        return {}
    oracle = (cluster.spec.get("chief") or cluster.spec["worker"])[0]
    host, _, port = oracle.rpartition(":")
    tuner_id = "chief" if cluster.is_chief else f"tuner-{cluster.task_type}-{cluster.task_index}"
    return {
        "KERASTUNER_TUNER_ID": tuner_id,
        "KERASTUNER_ORACLE_IP": host,
        "KERASTUNER_ORACLE_PORT": port,
    }


def process_env(cluster: Cluster, env: Mapping[str, str], tuning: bool) -> dict[str, str]:
    """The variables TensorFlow / keras-tuner still need in ``os.environ`` for ``cluster``.

    ``TF_CONFIG`` when it came from ``CLUSTER_SPEC`` and several workers train together;
    ``KERASTUNER_*`` for a search over several replicas unless they are already set.

    Example:
        >>> process_env(Cluster(), {}, tuning=True)
        {}
    """
    out: dict[str, str] = {}
    if cluster.from_cluster_spec and cluster.num_workers > 1:
        out["TF_CONFIG"] = json.dumps(cluster.tf_config)
    if tuning and not env.get("KERASTUNER_TUNER_ID"):
        out.update(keras_tuner_env(cluster))
    return out
