"""Training straight from the tables users have: pandas CSV / JSON lines, odd names, NaN cells.

Fixtures are written by pandas itself (``to_csv`` with its index, ``to_json(lines=True)``,
gzip by file suffix) from scikit-learn's bundled data sets, as a user exports them.
"""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np
import pandas as pd
import pytest
from batch_helpers import local_args, read_rows, read_stats
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.model_selection import train_test_split
from trainer_helpers import child_env, log_records, restore_logging, run_task  # noqa: F401 (a fixture)

from batch import predict
from jobcommon import cli, exports, storage
from jobcommon.errors import BadInputError, UsageError
from jobcommon.schema import Schema
from trainer import convert, data, task

SAFE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Renamed wine columns: a space and a percent sign, a leading digit and a dot, unicode.
RENAMES = {"alcohol": "alcohol %", "ash": "1st.ash", "hue": "Farbtönung"}


def wine_frames(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Wine with odd column names, a categorical column, NaN cells and rows without a target.

    Returns the train and eval frames and how many training rows lack the target.
    """
    frame = load_wine(as_frame=True).frame.rename(columns=RENAMES)
    frame.insert(3, "colour group", np.where(frame["color_intensity"] > 5, "dark", "light"))
    train, test = train_test_split(
        frame, test_size=0.2, random_state=seed, stratify=frame["target"]
    )
    train = train.copy()
    train["target"] = train["target"].astype(float)  # NaN makes pandas write 1.0, 2.0
    rows = train.index
    train.loc[rows[:6], "malic_acid"] = np.nan
    train.loc[rows[7], "magnesium"] = np.nan  # one empty cell: still a numeric column
    train.loc[rows[8:11], "colour group"] = np.nan
    train.loc[rows[11:14], "target"] = np.nan
    return train, test, 3


def _run(tmp_path, *argv: str) -> task.RunResult:
    args = task.build_parser().parse_args(
        ["--job-dir", str(tmp_path / "job"), "--seed", "0", *argv]
    )
    return task.run(args, env={"CLOUD_ML_HP_METRIC_FILE": str(tmp_path / "hypertune.metrics")})


# ---------------------------------------------------------------- end to end


def test_pandas_files_in_gcs_train_and_batch_predict_with_the_original_names(gcs, bucket, tmp_path):
    train, test, without_target = wine_frames()
    train.to_csv(tmp_path / "train.csv.gz")  # pandas: index included, gzip from the suffix
    test.to_json(tmp_path / "eval.jsonl", orient="records", lines=True)
    storage.upload_file(str(tmp_path / "train.csv.gz"), f"{bucket}/wine/train.csv.gz")
    storage.upload_file(str(tmp_path / "eval.jsonl"), f"{bucket}/wine/eval.jsonl")

    env = child_env(gcs.env(), CLOUD_ML_HP_METRIC_FILE=str(tmp_path / "m"))
    proc = run_task(
        ["--job-dir", f"{bucket}/job", "--train-files", f"{bucket}/wine/train.csv.gz",
         "--eval-files", f"{bucket}/wine/eval.jsonl", "--target-column", "target",
         "--seed", "0"],
        env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    messages = [r.get("message", "") for r in log_records(proc.stdout)]
    assert any("a pandas index" in m and "train.csv.gz" in m for m in messages)
    assert any(f"skipped {without_target} of {len(train)} rows without a value" in m
               for m in messages)  # fmt: skip

    export = exports.latest_export(f"{bucket}/job/keras_export")
    metrics = json.loads(storage.read_text(f"{export}/metrics.json"))
    # Normalised in the model: wine is learnt with the default flags (was 0.25-0.35).
    assert metrics["accuracy"] >= 0.9
    assert metrics["train_records_without_target"] == without_target
    assert metrics["train_records"] == len(train) - without_target
    assert metrics["eval_records"] == len(test)

    schema = Schema.load(f"{export}/schema.json")
    columns = [c for c in train.columns if c != "target"]
    assert schema.feature_names == columns  # the original names, the index dropped
    assert all(SAFE.match(n) for n in schema.input_names), schema.input_names
    assert len(set(schema.input_names)) == len(columns)
    by_name = {f.name: f for f in schema.features}
    assert by_name["magnesium"].dtype == "float32"
    assert by_name["malic_acid"].mean == pytest.approx(train["malic_acid"].mean(), rel=1e-6)
    assert by_name["colour group"].vocabulary == ["", "dark", "light"]
    assert schema.num_classes == 3 and schema.label.vocabulary is None

    # Batch prediction with JSON instances keyed by the original column names, as pandas
    # writes them (NaN cells as null: the model imputes them), with an id as the key field.
    instances = test.drop(columns="target").assign(id=test.index)
    instances.loc[instances.index[:3], "malic_acid"] = np.nan
    instances.to_json(tmp_path / "instances.jsonl", orient="records", lines=True)
    assert '"malic_acid":null' in (tmp_path / "instances.jsonl").read_text()
    storage.upload_file(str(tmp_path / "instances.jsonl"), f"{bucket}/score/in.jsonl")
    assert predict.main([
        "--input-paths", f"{bucket}/score/in.jsonl", "--data-format", "JSON",
        "--output-path", f"{bucket}/score/out", "--model-dir", f"{bucket}/job/keras_export",
        "--key-field", "id", "--log-format", "text", *local_args(),
    ]) == 0  # fmt: skip
    assert read_stats(f"{bucket}/score/out")["errors"] == 0
    rows = read_rows(f"{bucket}/score/out", "prediction.results")
    assert sorted(r["key"] for r in rows) == sorted(test.index)
    right = [r["prediction"]["class_id"] == test.loc[r["key"], "target"] for r in rows]
    assert np.mean(right) >= 0.9


def test_regression_on_a_pandas_csv_with_empty_targets(tmp_path):
    frame = load_diabetes(as_frame=True).frame
    train, test = train_test_split(frame, test_size=0.2, random_state=0)
    train = train.copy()
    train.loc[train.index[:4], "target"] = np.nan
    train.to_csv(tmp_path / "train.csv")
    test.to_csv(tmp_path / "eval.csv")
    result = _run(
        tmp_path, "--train-files", str(tmp_path / "train.csv"),
        "--eval-files", str(tmp_path / "eval.csv"), "--target-column", "target",
        "--task", "regression",
    )  # fmt: skip
    assert result.metrics["train_records_without_target"] == 4
    # The head is scaled to the target: far better than predicting the mean (MAE ~64).
    assert result.metrics["mae"] < 55
    schema = Schema.load(os.path.join(result.export_path, "schema.json"))
    assert schema.task == "regression"
    assert schema.label.mean == pytest.approx(train["target"].mean(), rel=1e-5)


# ---------------------------------------------------------------- reading and inference


def test_schema_inference_from_a_pandas_csv(tmp_path, caplog):
    frame = load_breast_cancer(as_frame=True).frame.iloc[:120].copy()
    frame["target"] = frame["target"].astype(float)
    frame.loc[frame.index[3], "mean radius"] = np.nan
    frame.loc[frame.index[5], "target"] = np.nan
    frame.to_csv(tmp_path / "bc.csv")
    with caplog.at_level(logging.INFO, logger="trainer.tabular"):
        loaded = data.load_tabular(str(tmp_path / "bc.csv"), target_column="target")
    assert "a pandas index" in caplog.text
    schema = loaded.schema
    assert loaded.schema_inferred and "" not in schema.feature_names
    assert schema.feature_names == [c for c in frame.columns if c != "target"]
    radius = schema.features[0]
    assert (radius.name, radius.input_name, radius.dtype) == ("mean radius", "mean_radius",
                                                              "float32")  # fmt: skip
    assert radius.mean == pytest.approx(frame["mean radius"].mean(), rel=1e-6)
    assert radius.variance == pytest.approx(frame["mean radius"].var(ddof=0), rel=1e-5)
    # Labels written as 0.0 / 1.0 are the classes 0 and 1, not a vocabulary of strings.
    assert schema.label.vocabulary is None and schema.num_classes == 2
    assert (loaded.train_stats.records, loaded.train_stats.missing_target) == (120, 1)
    features, labels = next(iter(loaded.train.unbatch().batch(200)))
    assert labels.shape == (119,) and set(labels.numpy()) == {0, 1}
    assert int(np.isnan(features["mean_radius"].numpy()).sum()) == 1
    assert set(features) == set(schema.input_names)


def test_jsonl_gz_with_string_classes_and_a_vocabulary(tmp_path):
    frame = load_wine(as_frame=True).frame.rename(columns=RENAMES)
    frame["target"] = frame["target"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    frame.to_json(tmp_path / "wine.jsonl.gz", orient="records", lines=True)  # gzip by suffix
    with open(tmp_path / "wine.jsonl.gz", "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
    loaded = data.load_tabular(str(tmp_path / "wine.jsonl.gz"), target_column="target")
    assert loaded.schema.label.vocabulary == ["barbera", "barolo", "grignolino"]
    assert "od280/od315_of_diluted_wines" in loaded.schema.feature_names
    assert "od280_od315_of_diluted_wines" in loaded.schema.input_names
    assert "Farbtonung" in loaded.schema.input_names
    assert loaded.train_stats.usable == len(frame)


def test_vertex_data_format_reads_files_without_suffixes(tmp_path):
    frame = load_wine(as_frame=True).frame.sample(frac=1.0, random_state=0)
    frame.iloc[:100].to_csv(tmp_path / "training-00000-of-00001", index=False)
    frame.iloc[100:].to_csv(tmp_path / "validation-00000-of-00001", index=False)
    loaded = data.load_tabular(
        str(tmp_path / "training-*"), str(tmp_path / "validation-*"), data_format="csv"
    )  # "target" is found without --target-column
    assert (loaded.train_stats.usable, loaded.eval_stats.usable) == (100, len(frame) - 100)
    with pytest.raises(BadInputError, match="unknown file type"):
        data.load_tabular(str(tmp_path / "training-*"))
    with pytest.raises(UsageError, match="'bigquery' is not supported"):
        data.load_tabular(str(tmp_path / "training-*"), data_format="bigquery")


def test_convert_reads_pandas_tables_with_missing_values(tmp_path):
    frame = load_wine(as_frame=True).frame
    frame["target"] = frame["target"].astype(float)
    frame.loc[frame.index[:2], "target"] = np.nan
    frame.loc[frame.index[2:5], "ash"] = np.nan
    frame.to_csv(tmp_path / "wine.csv")
    out = tmp_path / "out"
    assert convert.main(["--input", str(tmp_path / "wine.csv"), "--output-dir", str(out),
                         "--label", "target", "--num-shards", "1"]) == 0  # fmt: skip
    schema = Schema.load(str(out / "schema.json"))
    # Was the vocabulary ['', '0.0', '1.0', '2.0']; the empty cells were a class.
    assert schema.label.vocabulary is None and schema.num_classes == 3
    assert schema.features[schema.feature_names.index("ash")].dtype == "float32"
    result = _run(tmp_path, "--train-files", str(out / "train-*"), "--epochs", "2")
    assert result.metrics["train_records"] == round((len(frame) - 2) * 0.8)

    diabetes = load_diabetes(as_frame=True).frame
    diabetes.loc[diabetes.index[:3], "target"] = np.nan
    diabetes.to_csv(tmp_path / "diabetes.csv")
    assert convert.main(["--input", str(tmp_path / "diabetes.csv"), "--output-dir",
                         str(tmp_path / "d"), "--label", "target", "--task", "regression",
                         "--num-shards", "1"]) == 0  # fmt: skip
    assert Schema.load(str(tmp_path / "d" / "schema.json")).label.dtype == "float32"


# ---------------------------------------------------------------- bad input


def _bad_run(tmp_path, capfd, *argv: str) -> tuple[int, str]:
    code = cli.run(task.main, ["--job-dir", str(tmp_path / "job"), "--log-format", "text",
                               *argv])  # fmt: skip
    captured = capfd.readouterr()
    out = captured.out + captured.err
    assert "Traceback" not in out
    return code, out


def test_bad_tables_are_one_line_naming_the_file_and_row(tmp_path, capfd):
    frame = load_wine(as_frame=True).frame
    path = tmp_path / "wine.csv"
    frame.to_csv(path)
    with open(path, "a") as f:
        f.write("999,1.0,2.0\n")  # a short row, as a truncated export leaves it
    code, out = _bad_run(tmp_path, capfd, "--train-files", str(path), "--target-column", "target")
    assert code == BadInputError.exit_code
    assert re.search(r"wine\.csv line 180: 3 fields where the header has 15; fix the row", out)

    code, out = _bad_run(tmp_path, capfd, "--train-files", str(path), "--target-column", "class")
    assert code == BadInputError.exit_code
    assert "has no column 'class': pass --target-column with one of its columns" in out
    assert "'od280/od315_of_diluted_wines'" in out

    named = frame.assign(target=frame["target"].map({0: "a", 1: "b", 2: "c"}))
    named.to_csv(tmp_path / "named.csv", index=False)
    code, out = _bad_run(tmp_path, capfd, "--train-files", str(tmp_path / "named.csv"),
                         "--target-column", "target", "--task", "regression")  # fmt: skip
    assert code == BadInputError.exit_code
    assert re.search(r"named\.csv line 2: the target column 'target' holds 'a', not a number", out)

    no_target = frame.drop(columns="target").assign(kind=frame["target"])
    no_target.to_csv(tmp_path / "kind.csv", index=False)
    code, out = _bad_run(tmp_path, capfd, "--train-files", str(tmp_path / "kind.csv"))
    assert code == UsageError.exit_code
    assert "which column is the target? pass --target-column NAME" in out

    fractions = load_diabetes(as_frame=True).frame.assign(target=lambda d: d["target"] + 0.5)
    fractions.to_csv(tmp_path / "diabetes.csv")
    code, out = _bad_run(tmp_path, capfd, "--train-files", str(tmp_path / "diabetes.csv"),
                         "--target-column", "target")  # fmt: skip
    assert code == BadInputError.exit_code
    assert "holds 151.5, not a class; pass --task regression" in out

    frame.drop(columns="ash").to_csv(tmp_path / "eval.csv")
    code, out = _bad_run(tmp_path, capfd, "--train-files", str(tmp_path / "named.csv"),
                         "--eval-files", str(tmp_path / "eval.csv"))  # fmt: skip
    assert code == BadInputError.exit_code
    assert "eval.csv lacks the columns ['ash'] of the schema" in out


def test_wrong_field_count_rows_are_skipped_and_counted(tmp_path):
    frame = load_wine(as_frame=True).frame
    path = tmp_path / "wine.csv"
    frame.to_csv(path)
    with open(path, "a") as f:
        f.write("999,1.0,2.0\n1000,x\n")
    loaded = data.load_tabular(str(path), target_column="target", skip_bad_records=True)
    assert (loaded.train_stats.records, loaded.train_stats.bad) == (len(frame) + 2, 2)
    frame.to_json(tmp_path / "wine.jsonl", orient="records", lines=True)
    with open(tmp_path / "wine.jsonl", "a") as f:
        f.write('{"alcohol": 13.2, "target":\n[1, 2]\n')  # a line cut short, then a list
    with pytest.raises(BadInputError, match=r"wine\.jsonl line 179: not valid JSON"):
        data.load_tabular(str(tmp_path / "wine.jsonl"))
    loaded = data.load_tabular(str(tmp_path / "wine.jsonl"), skip_bad_records=True)
    assert (loaded.train_stats.usable, loaded.train_stats.bad) == (len(frame), 2)


def test_text_that_is_not_utf8_or_gzip_that_is_damaged_is_named(tmp_path, capfd):
    frame = pd.DataFrame({"Größe": ["groß", "klein"] * 10, "x": range(20), "label": [0, 1] * 10})
    frame.to_csv(tmp_path / "latin.csv", encoding="latin-1", index=False)
    code, out = _bad_run(tmp_path, capfd, "--train-files", str(tmp_path / "latin.csv"))
    assert code == BadInputError.exit_code
    assert "latin.csv is not UTF-8 text" in out and "encoding='utf-8'" in out
    frame.to_csv(tmp_path / "t.csv.gz", index=False)
    blob = (tmp_path / "t.csv.gz").read_bytes()
    (tmp_path / "t.csv.gz").write_bytes(blob[: len(blob) // 2])
    code, out = _bad_run(tmp_path, capfd, "--train-files", str(tmp_path / "t.csv.gz"))
    assert code == BadInputError.exit_code
    assert "t.csv.gz is a damaged gzip file" in out


def test_a_bad_table_from_the_command_line_exits_without_a_traceback(tmp_path):
    frame = load_wine(as_frame=True).frame
    frame.to_csv(tmp_path / "wine.csv")
    with open(tmp_path / "wine.csv", "a") as f:
        f.write("1,2\n")
    proc = run_task(["--job-dir", str(tmp_path / "job"), "--train-files",
                     str(tmp_path / "wine.csv")], child_env(dict(os.environ)))  # fmt: skip
    assert proc.returncode == BadInputError.exit_code
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [r for r in log_records(proc.stdout) if r["severity"] == "ERROR"]
    assert len(errors) == 1 and "wine.csv line 180: 2 fields" in errors[0]["message"]


def test_tfrecords_without_a_schema_are_inferred_and_train(tmp_path):
    from trainer_helpers import write_digits

    write_digits(str(tmp_path / "d"), num_shards=2, gzip=True)
    written = Schema.load(str(tmp_path / "d" / "schema.json"))
    os.remove(tmp_path / "d" / "schema.json")
    loaded = data.load_tabular(str(tmp_path / "d" / "train-*"), target_column="label")
    (pixels,) = loaded.schema.features
    assert (pixels.name, pixels.dtype, pixels.shape) == ("pixels", "float32", [64])
    assert len(pixels.mean) == 64 and loaded.schema.num_classes == written.num_classes == 10
    assert loaded.train_stats.usable == 1438
    result = _run(tmp_path, "--train-files", str(tmp_path / "d" / "train-*"),
                  "--eval-files", str(tmp_path / "d" / "eval-*"), "--epochs", "2")  # fmt: skip
    assert result.metrics["accuracy"] > 0.8  # normalised pixels learn fast
    with pytest.raises(BadInputError, match="must be a float_list for --task regression"):
        data.load_tabular(str(tmp_path / "d" / "train-*"), task="regression")
