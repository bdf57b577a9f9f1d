"""What a run tells people: epoch log lines, TensorBoard scalars and the PNG of the curves.

Example:
    >>> png = plot_history({"loss": [0.9, 0.4], "val_loss": [1.0, 0.5]})  # doctest: +SKIP
"""

from __future__ import annotations

import io
import logging
import os

import keras

from jobcommon import storage

log = logging.getLogger("trainer.epochs")


def _scalar_metadata() -> bytes:
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    ).SerializeToString()


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch (the structured record carries the metrics as fields)."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        text = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))
        log.info(
            "epoch %d/%d %s",
            epoch + 1,
            self.epochs,
            text,
            extra={"json_fields": {"epoch": epoch + 1, "epochs": self.epochs, **logs}},
        )


class TensorBoardScalars(keras.callbacks.Callback):
    """Epoch scalars as TensorBoard event files, written locally and uploaded each epoch.

    The stock Keras callback and ``tf.summary.scalar`` need the tensorboard package; the
    low-level ``tf.summary.write`` with the scalars plugin's metadata writes the same records
    without it.
    """

    def __init__(self, local_dir: str, remote_dir: str | None) -> None:
        super().__init__()
        self.local_dir = local_dir
        self.remote_dir = remote_dir
        self._writers = {}

    def _writer(self, split: str):
        import tensorflow as tf

        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(
                os.path.join(self.local_dir, split)
            )
        return self._writers[split]

    def on_epoch_end(self, epoch, logs=None) -> None:
        import tensorflow as tf

        for key, value in (logs or {}).items():
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(split).as_default():
                tf.summary.write(
                    f"epoch_{name}",
                    tf.constant(float(value), tf.float32),
                    step=epoch,
                    metadata=_scalar_metadata(),
                )
        for w in self._writers.values():
            w.flush()
        if self.remote_dir and os.path.isdir(self.local_dir):
            storage.copy_tree(self.local_dir, self.remote_dir)

    def on_train_end(self, logs=None) -> None:
        for w in self._writers.values():
            w.close()


def plot_history(metrics: dict[str, list[float]], title: str = "training") -> bytes:
    """A PNG with loss (left) and the other metric (right), train and validation per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in metrics if not k.startswith("val_") and k != "learning_rate"]
    names = sorted(names, key=lambda k: (k != "loss", k))[:2]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(5 * max(1, len(names)), 3.6))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, name in zip(axes, names, strict=False):
        for key, style in ((name, "-o"), (f"val_{name}", "--s")):
            values = metrics.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=key, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
