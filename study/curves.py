"""The learning-curve PNG logged on every trial run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: trials run in CI and on servers
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_learning_curves(history: pd.DataFrame, title: str, path: Path) -> Path:
    """Loss and accuracy per epoch, with the best-val_loss and best-val_accuracy epochs marked."""
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.4))
    epochs = history["epoch"]
    for column, style in (("loss", "--"), ("val_loss", "-"), ("val_crossentropy", ":")):
        if column in history:
            loss_axis.plot(epochs, history[column], style, label=column)
    for column, style in (("accuracy", "--"), ("val_accuracy", "-"), ("test_accuracy", ":")):
        if column in history:
            accuracy_axis.plot(epochs, history[column], style, label=column)
    if "val_loss" in history and history["val_loss"].notna().any():
        loss_axis.axvline(epochs.iloc[int(history["val_loss"].astype(float).idxmin())], color="grey", lw=0.8)
    if "val_accuracy" in history and history["val_accuracy"].notna().any():
        accuracy_axis.axvline(epochs.iloc[int(history["val_accuracy"].astype(float).idxmax())], color="grey", lw=0.8)
    loss_axis.set(xlabel="epoch", ylabel="loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
