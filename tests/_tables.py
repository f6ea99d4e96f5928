"""Small results tables written by hand, for the tests of summaries, rankings and files."""

import math

import pandas as pd

NAN = math.nan


def config_rows(config_id, hparams, steps, batch_size, train, test, acc, diverged):
    return [
        dict(
            config_id=config_id,
            **hparams,
            step=s,
            examples_seen=s * batch_size,
            train_loss=tr,
            test_loss=te,
            test_accuracy=a,
            diverged=d,
        )
        for s, tr, te, a, d in zip(steps, train, test, acc, diverged, strict=True)
    ]


def two_config_table():
    """Config 0 trains normally; config 1 diverges after its first evaluation."""
    rows = config_rows(
        0,
        dict(optimizer="sgd", learning_rate=0.1, batch_size=8, seed=0, lr_rule="none"),
        [10, 20, 30],
        8,
        train=[2.0, 1.5, 1.2],
        test=[2.1, 1.4, 1.6],
        acc=[0.3, 0.5, 0.45],
        diverged=[False, False, False],
    ) + config_rows(
        1,
        dict(optimizer="adam", learning_rate=1.0, batch_size=16, seed=1, lr_rule="sqrt"),
        [10, 20, 30],
        16,
        train=[1.9, NAN, NAN],
        test=[2.2, NAN, NAN],
        acc=[0.2, NAN, NAN],
        diverged=[False, True, True],
    )
    # Rows out of order: "final" must mean the last step, not the last row.
    order = [5, 0, 3, 2, 4, 1]
    return pd.DataFrame([rows[i] for i in order])
