"""Do batch norm's running statistics follow the full-training-set statistics while the weights train?

Claim (Ioffe & Szegedy 2015, sec. 3.1): the running statistics, an EMA of batch statistics, lag the
moving statistics of the whole training set, less so as the weights settle; what is left is the
sampling spread of an EMA of i.i.d. batches. Also: test accuracy with running statistics (eval
mode) against each test batch of 100 normalizing itself.
Fixed: MNIST-1D, MLP (256, 256) + BN, Adam lr 1e-3, B = 32, m = 0.99, 3000 steps, one train() run
whose measurements at every 100 steps are the engine's `bn_stats_error` of the first layer and a
function of this script (the variance ratio, and the test accuracy with per-batch statistics).
PASS (fixed on a seed-0 calibration run; this run uses seed 1): the first BN layer's variance error
(RMS over features of log(running/full-set var)) at the end is below its value at step 5/(1-m) =
500. (That layer's input mean is ~0 at every step, the inputs being standardized, so its mean error
is sampling noise and is only reported.)
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pandas as pd
from _results import report
from matplotlib.figure import Figure

from jaxopt_lab import measure
from jaxopt_lab.engine import train
from jaxopt_lab.toys import probes

SPEC = train.TrainSpec(
    model_options={"hidden": (256, 256), "batchnorm": True}, optimizer="adam", batch_size=32, steps=3000,
    eval_every=100,
)  # fmt: skip
HPARAMS = {"learning_rate": 1e-3, "bn_momentum": 0.99}  # Adam's default lr, flax's default m
SEED = 1  # seed 0 was the calibration run


def first_layer(model, ds):
    """The variance ratio and the per-batch test accuracy, measured inside the run at every point."""

    def measured(params, model_state, batch):
        full = measure.full_set_bn_statistics(model, params, model_state, ds.x_train)["bn_0"]
        acc = probes.batch_stats_accuracy(model, params, model_state, ds.x_test, ds.y_test, 100)
        return {"var_ratio": jnp.mean(model_state["bn_0"].var / full.var), "test_acc_batch": acc}

    return measured


def main():
    ds = train.load_dataset(SPEC.dataset, SPEC.dataset_options)
    model, m, b = train.get_model(SPEC, ds), HPARAMS["bn_momentum"], SPEC.batch_size
    spec = dataclasses.replace(SPEC, measure=[measure.BatchNormError(layer=0), first_layer(model, ds)])
    tr = train.train(spec, HPARAMS, SEED)
    step, out = np.asarray(tr.step), {k: np.asarray(v) for k, v in tr.measured.items()}
    mean_err, var_err = out["bn_mean_error"], out["bn_var_error"]  # the engine's measurement
    ratio, acc = out["var_ratio"], out["test_acc_batch"]  # this script's
    table = pd.DataFrame(dict(step=step, mean_error=mean_err, var_error=var_err, var_ratio=ratio))
    table = table.assign(train_loss=tr.train_loss, test_acc_running=tr.test_accuracy, test_acc_batch=acc)
    # RMS errors of an EMA of i.i.d. batches: sampling spread, and for the variance also log((B-1)/B).
    spread = (1 - m) / (1 + m)
    f_mean, f_var = np.sqrt(spread / b), np.hypot(np.log((b - 1) / b), np.sqrt(spread * 2 / b))
    ax = Figure(figsize=(12, 4.4), layout="tight").subplots(1, 2)
    for e, f, c, label in [(mean_err, f_mean, "C0", "mean: RMS z"), (var_err, f_var, "C1", "var: RMS log r")]:
        ax[0].plot(step, e, c, label=label)
        ax[0].axhline(f, color=c, ls="--", lw=0.8, label="i.i.d.-batch EMA floor")
    ax[0].set(yscale="log", xlabel="Adam step", ylabel="error of running vs full-training-set stats")
    ax[0].set_title(f"The first BN layer's input (m={m}, B={b})")
    ax[1].plot(step, tr.test_accuracy, label="running statistics (eval mode)")
    ax[1].plot(step, acc, label="each test batch of 100 normalizes itself")
    ax[1].set(xlabel="Adam step", ylabel="test accuracy", title="MNIST-1D test accuracy")
    ax[0].legend(fontsize=8), ax[1].legend(fontsize=8)
    k = int(np.argmax(step >= 5 / (1 - m)))  # step 5/(1-m)
    verdict = f"var error {var_err[k]:.4f} at step {step[k]} -> {var_err[-1]:.4f} at {step[-1]} "
    verdict += f"(floor {f_var:.4f}), mean error {mean_err[k]:.4f} -> {mean_err[-1]:.4f} (floor {f_mean:.4f})"
    verdict += f", var ratio r {ratio[-1]:.4f} vs (B-1)/B {(b - 1) / b:.4f}; test acc running "
    verdict += f"{tr.test_accuracy[-1]:.3f}, per-batch {acc[-1]:.3f}"
    report("bn_running_stats_training", var_err[-1] < var_err[k], verdict, table, ax[0].figure, dpi=110)


if __name__ == "__main__":
    main()
