"""The data schema the trainer writes once and the batch predictor reuses.

A schema names the model's input features (dtype and shape, optional vocabulary) and its
label. It is stored as ``schema.json`` beside the training data and inside every export.

Example:
    >>> s = Schema(features=[Feature("pixels", "float32", [64])],
    ...            label=Feature("label", "int64", []), task="classification", num_classes=10)
    >>> Schema.from_json(s.to_json()) == s
    True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from jobcommon import storage
from jobcommon.errors import BadInputError

DTYPES = ("float32", "int64", "string")
TASKS = ("classification", "regression")
SCHEMA_FILE = "schema.json"


@dataclass
class Feature:
    """One named tensor: ``shape`` excludes the batch dimension (``[]`` for a scalar)."""

    name: str
    dtype: str
    shape: list[int] = field(default_factory=list)
    vocabulary: list[str] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise BadInputError(f"feature {self.name!r}: dtype must be one of {DTYPES}")
        self.shape = [int(d) for d in self.shape]

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Schema:
    """Features, the label, and what kind of task the label makes."""

    features: list[Feature]
    label: Feature
    task: str = "classification"
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise BadInputError(f"schema task must be one of {TASKS}, not {self.task!r}")
        if not self.features:
            raise BadInputError("schema has no features")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names) or self.label.name in names:
            raise BadInputError(f"schema feature names must be unique: {names}")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "schema") -> Schema:
        try:
            raw = json.loads(text)
            return cls(
                features=[Feature(**f) for f in raw["features"]],
                label=Feature(**raw["label"]),
                task=raw.get("task", "classification"),
                num_classes=raw.get("num_classes"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInputError(
                f"{source} is not a valid schema ({exc}); write it with trainer.data "
                "or see docs for the format"
            ) from exc

    def save(self, path: str) -> None:
        storage.write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> Schema:
        return cls.from_json(storage.read_text(path), source=path)
