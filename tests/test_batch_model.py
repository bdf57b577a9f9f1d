"""batch.model: a served SavedModel gives the Keras model's predictions, without Keras."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from tests.batch_helpers import repo_root, trained_fixture  # noqa: F401  (fixture)

SERVE_WITHOUT_KERAS = """
import json, sys
import numpy as np
from batch.model import load_model
model = load_model(sys.argv[1], "serving_default")
x = np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
outputs = model({"pixels": x})
loaded_keras = "keras" in sys.modules
import keras  # still importable afterwards, for code that needs it
print(json.dumps({"probabilities": outputs["probabilities"].tolist(),
                  "keras_while_serving": loaded_keras, "keras_after": keras.__version__}))
"""


def test_serving_imports_tensorflow_without_keras(trained, gcs_env):
    x = trained["x"][:5]
    env = {**os.environ, **gcs_env, "PYTHONPATH": repo_root(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_KERAS, trained["export"], json.dumps(x.tolist())],
        env=env,
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["keras_while_serving"] is False
    assert got["keras_after"]
    np.testing.assert_allclose(got["probabilities"], trained["expected"][:5], rtol=1e-4, atol=1e-6)
