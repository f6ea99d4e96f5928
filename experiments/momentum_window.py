"""How many steps does EMA momentum need to respond to a step input, and what does bias correction fix?

Claim: the moving average v_t = beta v_{t-1} + (1 - beta) g_t from v_0 = 0, fed
g_t = 1 for t >= 1, is exactly v_t = 1 - beta^t: it reaches 1 - 1/e after
ceil(-1/ln beta) ~ 1/(1 - beta) steps, and its early steps are biased toward
zero by beta^t. Dividing by 1 - beta^t (bias correction, as in Adam) gives
exactly 1; Adam's output m_hat/sqrt(v_hat) is then 1 too. Source: Kingma & Ba
(2015), section 3 (initialization bias correction).
Scientific: beta. Nuisance: none (a deterministic linear filter). Fixed:
Adam's b2 = 0.999, eps = eps_root = 0 (so its output is m_hat / sqrt(v_hat)).
Run in float64, so the check is of the formulas, not of float32 rounding (in
float32, b2 = 0.999 alone is off by 1.3e-5 relative in 1 - b2).
PASS: the toolkit's transforms match the closed forms to 1e-12 at every step,
and the first step with v_t >= 1 - 1/e equals ceil(-1/ln beta), within one
step of 1/(1 - beta).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from _results import report
from matplotlib.figure import Figure

from jaxopt_lab.optim import transforms
from jaxopt_lab.toys import problems

jax.config.update("jax_enable_x64", True)

BETAS = (0.9, 0.99)  # the usual momentum and a long (100-step) window
STEPS = 500  # five windows of the slower beta
TOL = 1e-12  # float64: rounding stays below ~1e-14 over 500 steps


def main():
    rows, ok, crossings, worst = [], True, {}, 0.0
    ax, t = Figure(figsize=(7, 4.2), layout="tight").subplots(), np.arange(1, STEPS + 1)
    marks = np.unique(np.geomspace(1, STEPS, 12).astype(int)) - 1  # where Adam's markers are drawn
    for beta, color, marker in zip(BETAS, ("C0", "C3"), ("o", "x"), strict=True):
        txs = {  # the toolkit's own transforms, fed g_t = 1
            "ema": transforms.scale_by_momentum(beta, ema=True),
            "ema_bias_corrected": transforms.scale_by_momentum(beta, ema=True, bias_correction=True),
            "adam": transforms.scale_by_adam(beta, 0.999, 0.0, 0.0),
        }
        out = {k: np.asarray(problems.step_response(tx, STEPS, dtype=jnp.float64)) for k, tx in txs.items()}
        closed = {"ema": 1 - beta**t, "ema_bias_corrected": np.ones(STEPS), "adam": np.ones(STEPS)}
        err = {k: float(np.max(np.abs(v - closed[k]))) for k, v in out.items()}
        crossing, predicted = int(t[np.argmax(out["ema"] >= 1 - 1 / np.e)]), int(np.ceil(-1 / np.log(beta)))
        ok &= max(err.values()) < TOL and crossing == predicted and abs(crossing - 1 / (1 - beta)) <= 1
        crossings[beta], worst = crossing, max(worst, *err.values())
        rows.append(pd.DataFrame({"beta": beta, "step": t, "closed_form_ema": closed["ema"], **out}))
        print(f"beta={beta}: max |error| {err}; 1-1/e at step {crossing}, ceil(-1/ln beta) = {predicted}")
        ax.plot(t, out["ema"], color=color, lw=2.5, alpha=0.5, label=f"EMA, beta={beta}")
        ax.plot(t, closed["ema"], "k:", lw=1)
        label = f"bias-corrected EMA, beta={beta}"
        ax.plot(t, out["ema_bias_corrected"], color=color, lw=1.5, ls="--", label=label)
        label = f"Adam m_hat/sqrt(v_hat), b1={beta}"
        ax.plot(t[marks], out["adam"][marks], marker, color=color, mfc="none", ms=8, label=label)
        ax.axvline(1 / (1 - beta), color=color, lw=0.8, ls="-.")
        ax.text(1 / (1 - beta) * 1.05, 0.05, f"1/(1-{beta})", color=color)
    ax.axhline(1 - 1 / np.e, color="gray", lw=0.8), ax.text(1.1, 1 - 1 / np.e + 0.02, "1 - 1/e", color="gray")
    ax.plot([], [], "k:", label="closed form 1 - beta^t")  # one legend entry for the dotted lines
    ax.set(xscale="log", xlabel="step t (input g_t = 1 from t = 1)", ylabel="transform output")
    ax.set_ylim(0, 1.45)
    ax.set_title("Step response of EMA momentum (toolkit transforms vs closed form)")
    ax.legend(loc="upper left", fontsize=7.5, ncol=2)
    windows = [round(1 / (1 - b)) for b in BETAS]  # the crossings' prediction
    verdict = f"steps to 1-1/e {crossings} (1/(1-beta) = {windows}), max |error| {worst:.1e} < {TOL}"
    report("momentum_window", ok, verdict, pd.concat(rows, ignore_index=True), ax.figure)


if __name__ == "__main__":
    main()
