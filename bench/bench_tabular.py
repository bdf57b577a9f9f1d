"""Quality on real tabular data: the trainer's defaults against scikit-learn on the same split.

scikit-learn's ``load_breast_cancer``, ``load_wine`` and ``load_diabetes`` are written as a
user has them, with pandas ``to_csv`` (index included, original column names such as
``mean radius`` and ``od280/od315_of_diluted_wines``), split 80/20 with a fixed seed. The
trainer runs as a user would start it, with nothing but ``--target-column target`` (and
``--task regression`` for diabetes), straight on the CSV files, with no schema.json. Its
eval accuracy (MAE for diabetes) is set against ``StandardScaler`` + ``LogisticRegression``
(``Ridge`` for diabetes) fitted on the same training rows.

Targets: accuracy within 0.02 of scikit-learn's (the row's ratio target is
``(baseline - 0.02) / baseline``); MAE at most 10% above Ridge's.

Run::

    python bench/bench_tabular.py --repeats 3
    python bench/bench_tabular.py --quick        # one run per data set

Prints a Markdown table and saves it through ``bench/common.py``
(``bench/results/tabular.md`` and ``.json``, gathered by ``bench/run.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from common import Row, save  # noqa: E402

SEED = 0
DATASETS = {
    "breast_cancer": "classification",
    "wine": "classification",
    "diabetes": "regression",
}


def write_split(name: str, out_dir: str) -> tuple[str, str]:
    """``train.csv`` / ``eval.csv`` of one scikit-learn data set, as pandas writes them."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    frame = getattr(datasets, f"load_{name}")(as_frame=True).frame
    train, test = train_test_split(frame, test_size=0.2, random_state=SEED)
    paths = os.path.join(out_dir, f"{name}-train.csv"), os.path.join(out_dir, f"{name}-eval.csv")
    train.to_csv(paths[0])
    test.to_csv(paths[1])
    return paths


def sklearn_score(train_csv: str, eval_csv: str, task: str) -> float:
    """Accuracy of StandardScaler + LogisticRegression, or MAE of StandardScaler + Ridge."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import accuracy_score, mean_absolute_error
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = pd.read_csv(train_csv, index_col=0)
    test = pd.read_csv(eval_csv, index_col=0)
    x, y = train.drop(columns="target"), train["target"]
    xt, yt = test.drop(columns="target"), test["target"]
    if task == "classification":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        return float(accuracy_score(yt, model.fit(x, y).predict(xt)))
    model = make_pipeline(StandardScaler(), Ridge())
    return float(mean_absolute_error(yt, model.fit(x, y).predict(xt)))


def trainer_score(train_csv: str, eval_csv: str, task: str, job_dir: str) -> float:
    """The trainer's eval accuracy (or MAE), run as ``python -m trainer.task`` with defaults."""
    cmd = [
        sys.executable, "-m", "trainer.task", "--job-dir", job_dir,
        "--train-files", train_csv, "--eval-files", eval_csv, "--target-column", "target",
    ]  # fmt: skip
    if task == "regression":
        cmd += ["--task", "regression"]
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", LOG_FORMAT="json")
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"trainer failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(result["metrics"]["accuracy" if task == "classification" else "mae"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="trainer runs per data set")
    parser.add_argument("--quick", action="store_true", help="one run per data set")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tabular-") as tmp:
        for name, task in DATASETS.items():
            train_csv, eval_csv = write_split(name, tmp)
            baseline = sklearn_score(train_csv, eval_csv, task)
            values = [
                trainer_score(train_csv, eval_csv, task, os.path.join(tmp, f"{name}-job{i}"))
                for i in range(repeats)
            ]
            value = statistics.median(values)
            spread = " / ".join(f"{v:.4g}" for v in (min(values), value, max(values)))
            if task == "classification":
                measure = f"{name} eval accuracy (vs StandardScaler+LogisticRegression)"
                row = Row("tabular", measure, value, baseline, "", (baseline - 0.02) / baseline)
            else:
                measure = f"{name} eval MAE (vs StandardScaler+Ridge)"
                row = Row("tabular", measure, value, baseline, "", 1.10, lower_is_better=True)
            row.spread = spread
            rows.append(row)
            print(f"{name}: trainer {values} vs scikit-learn {baseline:.4f}", flush=True)
    notes = (
        f"pandas to_csv files (index included), 80/20 split (random_state={SEED}); the trainer "
        "with default flags plus --target-column target (--task regression for diabetes), "
        f"{repeats} run(s) each, median shown."
    )
    save("tabular", rows, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
