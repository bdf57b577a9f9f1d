"""The data schema the trainer writes once and the batch predictor reuses.

A schema names the model's input features (dtype and shape, optional vocabulary) and its
label. It is stored as ``schema.json`` beside the training data and inside every export.

A feature's ``name`` is the column name as the data has it (``mean radius``,
``od280/od315_of_diluted_wines``): CSV headers, JSON keys and tf.Example keys use it, and so
do JSON instances sent to batch prediction. The model's input (a Keras input, a SavedModel
signature argument) is called ``input_name``, a safe TensorFlow name made from it.
A numeric feature read from a table also carries its training ``mean`` (missing values become
it) and ``variance`` (for the model's Normalization layer).

Example:
    >>> s = Schema(features=[Feature("pixels", "float32", [64])],
    ...            label=Feature("label", "int64", []), task="classification", num_classes=10)
    >>> Schema.from_json(s.to_json()) == s
    True
    >>> Schema([Feature("mean radius", "float32"), Feature("mean_radius", "float32"),
    ...         Feature("od280/od315", "float32"), Feature("1st", "float32")],
    ...        Feature("y", "int64"), num_classes=2).input_names
    ['mean_radius', 'mean_radius_2', 'od280_od315', 'f_1st']
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field

from jobcommon import storage
from jobcommon.errors import BadInputError

DTYPES = ("float32", "int64", "string")
TASKS = ("classification", "regression")
SCHEMA_FILE = "schema.json"
# What a TensorFlow op / Keras layer name may hold (ASCII letters, digits, underscores).
_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")


def safe_name(name: str) -> str:
    """A TensorFlow-safe name for a column name: accents dropped, other characters ``_``.

    Examples:
        >>> safe_name("mean radius"), safe_name("od280/od315_of_diluted_wines")
        ('mean_radius', 'od280_od315_of_diluted_wines')
        >>> safe_name("Größe (cm)"), safe_name("2nd.value"), safe_name("")
        ('Grosse_cm', 'f_2nd_value', 'f_')
    """
    # NFKD splits accents off their letters (é -> e + accent); ß has no such split.
    decomposed = unicodedata.normalize("NFKD", name.replace("\u00df", "ss"))
    ascii_name = decomposed.encode("ascii", "ignore").decode()
    out = _UNSAFE.sub("_", ascii_name).strip("_")
    return out if out[:1].isalpha() else "f_" + out


@dataclass
class Feature:
    """One named tensor: ``shape`` excludes the batch dimension (``[]`` for a scalar)."""

    name: str
    dtype: str
    shape: list[int] = field(default_factory=list)
    vocabulary: list[str] | None = None
    # The model input's name; the schema fills it in from ``name`` (see safe_name).
    input_name: str | None = None
    # Training statistics of a numeric column (one value, or one per element of a shape).
    mean: float | list[float] | None = None
    variance: float | list[float] | None = None

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
        taken = {f.input_name for f in self.features if f.input_name}
        if len(taken) != sum(1 for f in self.features if f.input_name):
            raise BadInputError(f"schema input names must be unique: {self.input_names}")
        for f in self.features:
            if f.input_name:
                continue
            base = candidate = safe_name(f.name)
            n = 1
            while candidate in taken:
                n += 1
                candidate = f"{base}_{n}"
            f.input_name = candidate
            taken.add(candidate)

    @property
    def feature_names(self) -> list[str]:
        """The features' names as the data has them (columns, JSON keys, tf.Example keys)."""
        return [f.name for f in self.features]

    @property
    def input_names(self) -> list[str]:
        """The model's input names, one per feature, in the same order."""
        return [f.input_name for f in self.features]

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
