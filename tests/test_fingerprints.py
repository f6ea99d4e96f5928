"""Python objects a sweep is given are recorded by qualified name and fingerprint: a resume
with another object is refused, the same object resumes, the command says what to pass."""

import types

import flax.linen as nn
import jax.numpy as jnp
import optax
import pytest

from jaxopt_lab import cli
from jaxopt_lab import fingerprints as F
from jaxopt_lab.engine import sweep as S
from jaxopt_lab.errors import InputError
from jaxopt_lab.nn import models as M
from jaxopt_lab.optim import families as O
from jaxopt_lab.outputs import schema

SPEC = dict(dataset="regression", dataset_options={"n": 64, "dim": 4, "n_test": 16}, steps=4, eval_every=2)


class Wide(nn.Module):
    width: int = 4

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.relu(nn.Dense(self.width)(x)))


def _scaled_loss(c):
    return lambda out, y: c * jnp.sum(jnp.square(out - y), axis=-1)


def _module_with_helper(helper_body: str):
    """A function ``f`` calling ``helper`` of its own module, as two versions of a file would."""
    module = types.ModuleType("users_module")
    exec(f"def helper(x):\n    return {helper_body}\n\ndef f(x):\n    return helper(x)\n", vars(module))
    module.f.__module__ = module.helper.__module__ = "users_module"
    return module.f


def test_fingerprints_follow_what_determines_the_numbers():
    assert F.fingerprint(Wide(4)) == F.fingerprint(Wide(4))  # equal objects, made twice
    assert F.fingerprint(Wide(4)) != F.fingerprint(Wide(8))  # a field
    assert F.fingerprint(_scaled_loss(1.0)) != F.fingerprint(_scaled_loss(2.0))  # a captured value
    assert F.fingerprint(_module_with_helper("x + 1")) != F.fingerprint(_module_with_helper("x + 2"))
    assert F.fingerprint(M.from_flax(Wide(4))) != F.fingerprint(M.from_flax(Wide(8)))  # through closures
    assert F.qualified_name(M.from_flax(Wide(4))) == f"{__name__}.Wide"
    assert F.qualified_name(_scaled_loss(1.0)) == f"{__name__}._scaled_loss.<locals>.<lambda>"


def _family(decay):
    def decayed_sgd(learning_rate):
        return optax.chain(optax.add_decayed_weights(decay), optax.sgd(learning_rate))

    return O.Optimizer(decayed_sgd, hparams={"learning_rate": 0.01})


def test_a_resume_refuses_another_object_under_the_same_name_and_takes_the_same(tmp_path, capsys):
    out = tmp_path / "out"
    grid = S.Grid(learning_rate=[0.01])

    def run(model=None, loss=None, family=None, **kwargs):  # each object made anew per call
        model, loss, family = model or Wide(4), loss or _scaled_loss(0.5), family or _family(0.0)
        spec = {**SPEC, "model": M.from_flax(model), "loss": loss, "optimizer": family}
        return S.sweep(spec, grid, out=out, progress=False, **kwargs)

    first = run()
    definition = schema.read_definition(out / "sweep.toml")
    assert definition["spec"]["model"] == f"python:{__name__}.Wide"
    assert definition["spec"]["loss"] == f"python:{__name__}._scaled_loss.<locals>.<lambda>"
    objects = definition["objects"]
    assert objects["optimizer"]["decayed_sgd"]["name"] == f"{__name__}._family.<locals>.decayed_sgd"
    assert {len(objects[k]["sha256"]) for k in ("model", "loss")} == {64}
    for change, table in (
        (dict(model=Wide(8)), "model"),
        (dict(loss=_scaled_loss(2.0)), "loss"),
        (dict(family=_family(1e-3)), "optimizer"),
    ):
        with pytest.raises(InputError, match=rf"cannot resume .*: \[objects\] {table} is"):
            run(resume=True, **change)
    # equal objects made anew resume the finished sweep
    again = run(resume=True)
    assert again.table.equals(first.table)
    # the command cannot rebuild them, and says what to pass
    assert cli.main(["sweep", "--config", str(out / "sweep.toml"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"model {__name__}.Wide" in err and "optimizer decayed_sgd" in err and "from Python" in err
    assert not (tmp_path / "x").exists()


def test_a_python_name_in_a_spec_is_refused_with_what_to_do():
    with pytest.raises(InputError, match=r"model='python:x.Net' was given as a Python object: run"):
        S.sweep({**SPEC, "model": "python:x.Net"}, S.Grid(learning_rate=[0.1]), progress=False)
