"""The batch job imports Beam and TensorFlow without the optional packages it never uses,
and everything still works: the packages can be imported afterwards, and Beam runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobcommon.imports import without

CHECK = """
import sys
from batch.job import BEAM_UNUSED, import_beam
from batch.model import import_tensorflow
import_beam()
import_tensorflow()
left = [m for m in (*BEAM_UNUSED, "keras", "scipy") if m in sys.modules]
assert not left, left
import apache_beam as beam
with beam.Pipeline() as p:
    _ = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2) | beam.Map(print)
import pandas, pymongo, keras  # hidden only for the length of those imports
print("imported", pandas.__name__, pymongo.__name__, keras.__name__)
"""


def test_beam_and_tensorflow_import_without_what_the_job_never_uses():
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(done.stdout.split()[:3]) == ["2", "4", "6"]
    assert "imported pandas pymongo keras" in done.stdout
    # Beam's warning that its MongoDB connector will not work is not the job's business.
    assert "bson" not in done.stderr


def test_hidden_packages_fail_to_import_only_inside_the_block():
    sys.modules.pop("colorsys", None)
    with without("colorsys"), pytest.raises(ModuleNotFoundError, match="colorsys"):
        import colorsys  # noqa: F401
    import colorsys  # noqa: F401, F811


def test_reading_a_tf_example_key_in_the_job_process_leaves_keras_out():
    # TFRecords with a key field are parsed in the job process, which has not imported
    # TensorFlow (the model has a process of its own): the import must skip Keras too.
    code = (
        "import sys\n"
        "from batch import instances\n"
        "try:\n"
        "    instances.check_example(b'not a tf.Example', None)\n"
        "except instances.RecordError as err:\n"
        "    print(err.kind)\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["bad_example", "True", "False"]
