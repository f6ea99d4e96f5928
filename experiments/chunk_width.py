"""Chunk width: how far apart are a config's numbers in vmapped programs of different widths?

Question: a sweep runs configs in chunks under `vmap`; XLA blocks a batched matmul differently
by the chunk's width, so a config's last bits depend on how many configs share its device. By
how much does that move its results after training, per optimizer, with and without batch norm,
and between the `bucket` and `mask` batch-size strategies?
Claim (DESIGN.md, "up to float reordering"): SGD and momentum stay within float rounding;
adaptive optimizers with batch norm amplify it (a bias before batch norm has an exactly zero
gradient, Ioffe & Szegedy 2015 section 2, whose rounding noise Adam or RMSProp normalize into
steps of order the learning rate), so their bound is stated here, not assumed.
Scientific: the width (1, 2, 8 configs per device) and the strategy. Nuisance: learning rate
(3 values), batch size (16 and 64), seed (2). Fixed: digits, MLP hidden (32,), 300 steps.
Reported: max |difference| of final test loss and accuracy against width 1 (= the config run
alone by `train()`). Within a width a config's numbers do not depend on its neighbours (tested
in tests/engine/test_sweep.py). PASS if SGD and momentum, with and without batch norm, stay within
1e-4 in test loss at every width and strategy (the other rows are the measured bound).
"""

import numpy as np
import pandas as pd
from _results import report
from matplotlib.figure import Figure

from jaxopt_lab.engine import sweep

OPTIMIZERS = {
    "sgd": [0.01, 0.05, 0.2],
    "momentum": [0.003, 0.01, 0.05],
    "rmsprop": [1e-4, 1e-3, 1e-2],
    "adam": [1e-4, 1e-3, 1e-2],
}  # each family's useful range on digits
SPEC = dict(dataset="digits", model="mlp", steps=300, eval_every=300)
RUNS = {
    "width 1": dict(chunk_size=1, strategy="bucket"),
    "width 2": dict(chunk_size=2, strategy="bucket"),
    "width 8": dict(chunk_size=8, strategy="bucket"),
    "mask, width 8": dict(chunk_size=8, strategy="mask"),
}
METRICS = ("test_loss", "test_accuracy")  # final values compared with width 1


def main():
    rows = []
    for batchnorm in (False, True):
        for opt, lrs in OPTIMIZERS.items():
            spec = {**SPEC, "optimizer": opt, "model_options": {"hidden": (32,), "batchnorm": batchnorm}}
            grid = sweep.Grid(learning_rate=lrs, batch_size=[16, 64], seed=[0, 1])
            finals = {
                name: sweep.sweep(spec, grid, progress=False, **kw).summary().set_index("config_id")
                for name, kw in RUNS.items()
            }
            for name, final in finals.items():  # the largest difference to the config run alone
                gap = {
                    m: float(np.nanmax(np.abs(final[f"final_{m}"] - finals["width 1"][f"final_{m}"])))
                    for m in METRICS
                }
                rows.append(dict(optimizer=opt, batchnorm=batchnorm, run=name, **gap))
    table = pd.DataFrame(rows)
    worst = table[table.run != "width 1"].groupby(["optimizer", "batchnorm"])[list(METRICS)].max()
    print(worst.to_string(float_format="{:.2e}".format))

    ax = Figure(figsize=(8, 4.2), layout="constrained").subplots()
    labels, colors = (
        [f"{o}{' + BN' if bn else ''}" for o, bn in worst.index],
        [f"C{int(bn)}" for _, bn in worst.index],
    )
    ax.bar(labels, np.maximum(worst.test_loss.to_numpy(), 1e-9), color=colors)
    ax.set(yscale="log", ylabel="max |Δ final test loss| vs width 1")
    ax.set_title("A config's final test loss in programs of other widths (and under mask)")
    ax.axhline(1e-4, color="grey", ls="--", lw=1), ax.tick_params(axis="x", rotation=30)

    plain = worst.loc[["sgd", "momentum"], "test_loss"].max()
    bound = ", ".join(f"{o}{'+BN' if bn else ''} {v:.1e}" for (o, bn), v in worst.test_loss.items())
    verdict = f"max |Δ test loss| SGD/momentum {plain:.1e} (<= 1e-4); all: {bound}"
    report("chunk_width", plain <= 1e-4, verdict, table, ax.figure)


if __name__ == "__main__":
    main()
